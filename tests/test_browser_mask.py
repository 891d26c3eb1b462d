"""A real browser paints a mask, at desktop and phone widths: it clicks a handle and a target, opens the Mask tab
(the editor shows the image as large as the Points tab does), paints a stroke with the mouse, goes back to
Points and sees the mask in the status line, starts a drag and stops it, and reopens the Mask tab. The server
logs no traceback, and the browser console and the page log no error on the way: in particular not Gradio's
"No draw texture found for layer", which two overlapping loads of a mask layer print (the editor's first
showing with a layer, or two values with a layer close together; see `draggan.app.events.editor_value`)."""

from __future__ import annotations

import pytest

from test_browser import open_app, place_pair, server_log, sync_api, url  # noqa: F401  (fixtures: app server, server log)

# Gradio's own debugging handle on the editor (`window.editor`): the image's size on screen, zoom included.
EDITOR_IMAGE = ("(() => { const e = window.editor; if (!e) return null; const d = e.dimensions_value; "
                "return [d.width * e.scale_value, d.height * e.scale_value]; })()")


def _paint_stroke(page) -> None:
    """Drag the mouse across the middle of the editor's canvas with the default (flexible-area) brush."""
    canvas = page.locator("#mask-editor canvas").first
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 60, cy)
    page.mouse.down()
    for i in range(1, 13):
        page.mouse.move(cx - 60 + 10 * i, cy + 2 * i)
    page.mouse.up()


@pytest.mark.parametrize("width,height", [(1280, 960), (390, 844)])
def test_paint_a_mask_without_console_errors(url, server_log, width, height):  # noqa: F811
    errors: list[str] = []
    with open_app(url, width, height, errors) as page:
        box = page.locator("#canvas img").bounding_box()
        stats = page.locator("#stats")
        place_pair(page, (0.35, 0.40), (0.55, 0.45))
        sync_api.expect(stats).to_contain_text("no mask", timeout=30_000)

        page.get_by_role("tab", name="Mask").click()
        sync_api.expect(page.locator("#mask-editor canvas").first).to_be_visible(timeout=60_000)
        page.wait_for_function(f"(() => {{ const s = {EDITOR_IMAGE}; return s && s[0] > 0; }})()", timeout=60_000)
        page.wait_for_timeout(1500)                                     # the editor's first layout settles
        shown = page.evaluate(EDITOR_IMAGE)
        assert abs(shown[0] - box["width"]) <= 2 and abs(shown[1] - box["height"]) <= 2, \
            f"the Mask tab shows the image at {shown}, the Points tab at {box['width']}x{box['height']}"
        _paint_stroke(page)
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=30_000)
        page.get_by_role("tab", name="Points").click()
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)

        page.get_by_role("button", name="Start").click()
        sync_api.expect(stats).to_contain_text("running", timeout=60_000)
        page.get_by_role("button", name="Stop").click()
        sync_api.expect(stats).to_contain_text("drag(s) done", timeout=120_000)
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)
        page.get_by_role("tab", name="Mask").click()
        sync_api.expect(page.locator("#mask-editor canvas").first).to_be_visible(timeout=30_000)
        page.wait_for_timeout(2500)                                     # the editor loads the value it was sent
        sync_api.expect(stats).to_contain_text("mask: flexible area", timeout=10_000)
    assert not errors, errors
