"""A real browser paints a mask: it clicks a handle and a target, opens the Mask tab, paints a stroke with the
mouse, goes back to Points and sees the mask in the status line; it reopens the Mask tab after a drag. The
server logs no traceback, and the browser console and the page log no error on the way.

Known failure, upstream: Gradio 6's ImageEditor logs "No draw texture found for layer" the first time it is
shown with a value that has a layer (it loads that value twice at once; the evidence, file and line, is in
`draggan.ui.events.editor_value`'s docstring). The test is a strict xfail on exactly that message: any other
failure (painting lost, another console error, a server traceback) fails it, and once Gradio is fixed it
passes and the strict xfail reports it, so the marker can go."""

from __future__ import annotations

import pytest

from test_browser import open_app, server_log, sync_api, url  # noqa: F401  (fixtures: app server, server log)

GRADIO_RACE = "console: No draw texture found for layer"


class GradioLayerRace(Exception):
    """The browser logged only the known Gradio ImageEditor race message."""


def _paint_stroke(page) -> None:
    """Drag the mouse across the middle of the editor's canvas with the default (flexible-area) brush."""
    canvas = page.locator("#mask-editor canvas").first
    sync_api.expect(canvas).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1500)                                         # the editor's first layout settles
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    for i in range(1, 13):
        page.mouse.move(cx - 60 + 10 * i, cy + 2 * i)
    page.mouse.up()


@pytest.mark.xfail(strict=True, raises=GradioLayerRace,
                   reason="Gradio 6.31 ImageEditor: two concurrent add_layers_from_url on first show log 'No draw "
                          "texture found for layer' (Index-*.js line 522; cf. gradio-app/gradio#7522, #7408)")
def test_paint_a_mask_without_console_errors(url, server_log):  # noqa: F811
    errors: list[str] = []
    with open_app(url, 1280, 960, errors) as page:
        image = page.locator("#canvas img")
        stats = page.locator("#stats")
        box = image.bounding_box()
        start_src = image.get_attribute("src")
        image.click(position={"x": box["width"] * 0.35, "y": box["height"] * 0.40})
        sync_api.expect(image).not_to_have_attribute("src", start_src, timeout=30_000)
        handle_src = image.get_attribute("src")
        image.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.45})
        sync_api.expect(image).not_to_have_attribute("src", handle_src, timeout=30_000)
        sync_api.expect(stats).to_contain_text("1 point pair(s)", timeout=30_000)
        sync_api.expect(stats).to_contain_text("no mask", timeout=30_000)

        page.get_by_role("tab", name="Mask").click()
        _paint_stroke(page)
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=30_000)
        page.get_by_role("tab", name="Points").click()
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)

        page.get_by_role("button", name="Start").click()
        sync_api.expect(stats).to_contain_text("drag(s) done", timeout=180_000)
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)
        page.get_by_role("tab", name="Mask").click()
        sync_api.expect(page.locator("#mask-editor canvas").first).to_be_visible(timeout=30_000)
        page.wait_for_timeout(2000)                                     # the editor loads the value it was sent
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)
    if errors and set(errors) == {GRADIO_RACE}:
        raise GradioLayerRace(errors)
    assert not errors, errors
