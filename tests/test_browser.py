"""A real browser drives the app: headless Chromium via Playwright loads the default flow at desktop and phone
widths (an example drag, Start, the image changes, no console error and no server traceback), clicks a handle
and a target, presses Start and Stop, and inverts a photo."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import pytest

from _app_server import running_app
from conftest import CHROMIUM_HINT, find_chromium

CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(f"no Chromium found: {CHROMIUM_HINT}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
BUNDLED = "Cartoon faces (bundled, offline, 128)"


@pytest.fixture(scope="module")
def url():
    with pytest.MonkeyPatch.context() as mp, running_app(mp) as (address, _studio):
        yield address


class _Records(logging.Handler):
    """Log records at WARNING or above with a traceback, or at ERROR or above (the server's own logs)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture()
def server_log(capfd) -> Iterator[None]:
    """Fail the test when the app server logged an error or wrote a traceback while it ran (uvicorn, asyncio
    and Gradio log through `logging`; Gradio also prints tracebacks to stderr, which `capfd` reads)."""
    records = _Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "asyncio", "gradio")]
    for logger in loggers:
        logger.addHandler(records)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    err = capfd.readouterr().err
    assert "Traceback" not in err, f"the server wrote a traceback:\n{err[-3000:]}"
    assert not records.bad, f"the server logged errors: {records.bad}"


@contextlib.contextmanager
def open_app(url: str, width: int, height: int, errors: list[str] | None = None) -> Iterator["sync_api.Page"]:
    """A headless Chromium page of the given viewport size on the app, once its image is shown; browser console
    errors and page errors are appended to `errors`."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if errors is not None:
                page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(url)
            page.wait_for_selector("#canvas img", timeout=120_000)
            yield page
        finally:
            browser.close()


@pytest.fixture()
def page(url):
    with open_app(url, 1280, 960) as page:
        yield page


def pick_model(page, name: str) -> None:
    page.get_by_label("Model", exact=True).first.click()
    page.get_by_role("option", name=name).first.click()
    sync_api.expect(page.locator("#stats")).to_contain_text(name, timeout=60_000)


@pytest.mark.parametrize("width,height,shot", [(1280, 960, "screenshot.png"), (390, 844, "screenshot-phone.png")])
def test_default_flow_example_drag_without_errors(url, server_log, width, height, shot):
    """The first minute of a visitor: the bundled model, an example, Start, the result and a before/after view;
    on a phone the image comes before the controls and the toolbar stays one row."""
    errors: list[str] = []
    with open_app(url, width, height, errors) as page:
        stats = page.locator("#stats")
        image = page.locator("#canvas img")
        sync_api.expect(stats).to_contain_text(BUNDLED, timeout=60_000)
        page.get_by_role("button", name="Smile", exact=True).click()
        sync_api.expect(stats).to_contain_text("seed 3", timeout=60_000)
        sync_api.expect(stats).to_contain_text("press Start", timeout=30_000)
        before = image.get_attribute("src")

        start, reset = page.get_by_role("button", name="Start"), page.get_by_role("button", name="⟲ Reset", exact=True)
        toolbar = [start.bounding_box(), reset.bounding_box()]
        assert abs(toolbar[0]["y"] - toolbar[1]["y"]) < 2 and toolbar[0]["height"] < 60, "toolbar is one row"
        if width < 600:
            model = page.get_by_label("Model", exact=True).first.bounding_box()
            assert image.bounding_box()["y"] < model["y"], "on a phone the image comes before the controls"

        start.click()
        sync_api.expect(page.locator("#drag-progress progress")).to_have_count(1, timeout=60_000)
        sync_api.expect(stats).to_contain_text("drag(s) done", timeout=180_000)
        sync_api.expect(stats).to_contain_text("Arrived", timeout=10_000)
        assert image.get_attribute("src") != before, "the drag changed the image"
        folder = os.environ.get("DRAGGAN_SCREENSHOT_DIR")
        if folder:
            page.screenshot(path=os.path.join(folder, shot), full_page=width < 600)
        start.click()                                                   # arrived points are not dragged again
        sync_api.expect(stats).to_contain_text("Those points have arrived", timeout=30_000)

        page.get_by_role("tab", name="Before / after").click()
        sync_api.expect(page.locator("#compare img")).to_have_count(2, timeout=30_000)
    assert not errors, errors


def place_pair(page, handle: tuple[float, float], target: tuple[float, float]) -> str:
    """Click a handle then a target at fractions (x, y) of the canvas, each time waiting for the redrawn image;
    returns the image's src with the pair drawn."""
    image = page.locator("#canvas img")
    box = image.bounding_box()
    for fx, fy in (handle, target):
        before = image.get_attribute("src")
        image.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
        sync_api.expect(image).not_to_have_attribute("src", before, timeout=30_000)
    sync_api.expect(page.locator("#stats")).to_contain_text("1 point pair(s)", timeout=30_000)
    return image.get_attribute("src")


def test_click_points_start_and_stop(page):
    image = page.locator("#canvas img")
    stats = page.locator("#stats")
    assert image.bounding_box()["width"] >= 256, "the 64 px model is shown upscaled"
    points_src = place_pair(page, (0.30, 0.30), (0.55, 0.45))

    page.get_by_role("button", name="Start").click()
    sync_api.expect(stats).to_contain_text("running", timeout=60_000)
    sync_api.expect(image).not_to_have_attribute("src", points_src, timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    sync_api.expect(stats).to_contain_text("1 drag(s) done", timeout=60_000)
    assert image.get_attribute("src") != points_src

    page.get_by_text("Export", exact=True).click()
    page.get_by_role("button", name="Recipe").click()
    sync_api.expect(page.locator('a[href$="-recipe.json"]')).to_have_count(1, timeout=30_000)


def test_picking_a_model_shows_it_with_its_step_size(page):
    """The bundled cartoon model comes with the zoo's drag_lr in the lr field; a fixture model with the default."""
    stats = page.locator("#stats")
    page.get_by_text("Drag settings").click()
    lr = page.get_by_label("Step size (lr)")
    sync_api.expect(lr).to_have_value("0.004", timeout=30_000)
    for name, value in [("Tiny StyleGAN2", "0.001"), (BUNDLED, "0.004")]:
        pick_model(page, name)
        sync_api.expect(stats).to_contain_text(name, timeout=60_000)
        sync_api.expect(lr).to_have_value(value, timeout=30_000)


def _red_dot_centre(page, before: str, after: str) -> tuple[float, float]:
    """Centre (as a fraction of width/height) of the red handle marker that a click drew: the pixels that
    changed between the two displayed images and are red now."""
    import io

    import numpy as np
    from PIL import Image

    old, new = (np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")).astype(int)
                for src in (before, after))
    red = (new[..., 0] > 170) & (new[..., 1] < 100) & (new[..., 2] < 100) & (np.abs(new - old).max(axis=2) > 40)
    ys, xs = np.nonzero(red)
    assert xs.size > 10, "no handle marker found in the displayed image"
    return (xs.mean() + 0.5) / new.shape[1], (ys.mean() + 0.5) / new.shape[0]


@pytest.mark.parametrize("width", [560])
def test_clicks_land_where_the_user_clicked_on_a_shrunk_image(url, width):
    with open_app(url, width, 900) as page:
        image = page.locator("#canvas img")
        page.wait_for_function("() => document.querySelector('#canvas img').naturalWidth > 0")
        box = image.bounding_box()
        assert box["width"] < 512, "the image is shown smaller than its natural size"
        start_src = image.get_attribute("src")
        image.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.70})
        sync_api.expect(image).not_to_have_attribute("src", start_src, timeout=30_000)
        fx, fy = _red_dot_centre(page, start_src, image.get_attribute("src"))
    assert abs(fx - 0.25) < 1.5 / 64 and abs(fy - 0.70) < 1.5 / 64, (fx, fy)


def test_upload_photo_invert_and_see_the_quality(url, tmp_path):
    """Upload a photo in the "Edit your own photo" panel; cancel a long inversion, then run a short one and see
    the quality readout and the session switch to the photo."""
    from PIL import Image

    from _app_server import FIXTURE_MODELS
    from draggan.checkpoints import load_generator
    from draggan.engine import DragSession

    # The "photo": an image the fixture model makes, enlarged onto a wider canvas that the app must crop.
    made = DragSession(load_generator(FIXTURE_MODELS["Tiny StyleGAN2"], device="cpu"), seed=3, psi=0.5).render()
    file = tmp_path / "holiday.png"
    canvas = Image.new("RGB", (120, 90), (40, 40, 40))
    canvas.paste(Image.fromarray(made).resize((90, 90), Image.BICUBIC), (15, 0))
    canvas.save(file)
    with open_app(url, 1280, 1100) as page:
        pick_model(page, "Tiny StyleGAN2")
        page.get_by_role("button", name="Edit your own photo").click()
        page.locator("#photo-upload input[type=file]").set_input_files(str(file))
        status = page.locator("#photo-status")
        sync_api.expect(status).to_contain_text("resized to 64×64 px (from 120×90 px)", timeout=30_000)
        page.get_by_role("button", name="Inversion steps").click()

        def set_steps(w: str, wplus: str, pti: str) -> None:
            for label, value in (("W steps", w), ("W+ steps", wplus), ("PTI steps", pti)):
                field = page.get_by_label(label, exact=True)
                field.fill(value)
                field.press("Tab")

        set_steps("4000", "0", "0")                  # a long run, cancelled once it is under way
        sync_api.expect(page.get_by_text("4000 steps")).to_be_visible(timeout=10_000)
        page.get_by_role("button", name="Invert photo").click()
        sync_api.expect(status).to_contain_text("/4000", timeout=30_000)
        page.get_by_role("button", name="Cancel").click()
        sync_api.expect(status).to_contain_text("Inversion cancelled after", timeout=30_000)
        sync_api.expect(page.locator("#stats")).to_contain_text("seed 0")

        set_steps("8", "4", "8")
        sync_api.expect(page.get_by_text("20 steps")).to_be_visible(timeout=10_000)
        page.get_by_role("button", name="Invert photo").click()
        sync_api.expect(status).to_contain_text("PSNR", timeout=60_000)
        sync_api.expect(status).to_contain_text("compared pixel by pixel")
        sync_api.expect(page.locator("#stats")).to_contain_text("photo holiday.png", timeout=10_000)
        page.locator("#photo-panel").screenshot(path=str(tmp_path / "photo-panel.png"))
        shot = os.environ.get("DRAGGAN_SCREENSHOT_DIR")
        if shot:
            page.locator("#photo-panel").screenshot(path=os.path.join(shot, "photo-panel.png"))
            page.screenshot(path=os.path.join(shot, "photo-app.png"), full_page=True)


@pytest.mark.parametrize("enter", [True, False])
def test_a_click_after_typing_a_seed_places_its_handle_on_the_new_image(url, server_log, monkeypatch, enter):
    """Type a seed (with or without Enter) and click the image once: the seed box's blur and the click race,
    yet the seed makes exactly one new image and the click places its handle on it (issue 23: the first
    click was lost)."""
    from draggan.service import handlers

    seed = 11 if enter else 12
    made = []
    make_state = handlers.make_state

    def counting(model, device, seed_value, *args, **kwargs):
        made.append(int(seed_value))
        return make_state(model, device, seed_value, *args, **kwargs)

    monkeypatch.setattr(handlers, "make_state", counting)
    with open_app(url, 1280, 800) as page:
        stats, image = page.locator("#stats"), page.locator("#canvas img")
        sync_api.expect(stats).to_contain_text("seed 0", timeout=60_000)
        box = page.get_by_label("Seed", exact=True)
        box.fill(str(seed))
        if enter:
            box.press("Enter")
            sync_api.expect(stats).to_contain_text(f"seed {seed}", timeout=60_000)
        before = image.get_attribute("src")
        size = image.bounding_box()
        image.click(position={"x": size["width"] * 0.3, "y": size["height"] * 0.6})   # blurs the seed box
        sync_api.expect(stats).to_contain_text("Handle 1 placed", timeout=30_000)
        sync_api.expect(stats).to_contain_text(f"seed {seed}")
        sync_api.expect(image).not_to_have_attribute("src", before, timeout=30_000)
        if enter:
            fx, fy = _red_dot_centre(page, before, image.get_attribute("src"))
            assert abs(fx - 0.3) < 0.05 and abs(fy - 0.6) < 0.05, (fx, fy)
        page.wait_for_timeout(1000)                   # any second new-image event would have come by now
        assert "Handle 1 placed" in stats.inner_text(), "a later event replaced the image with the handle"
    assert made.count(seed) == 1, f"new images made for seed {seed}: {made.count(seed)}"


def _image_box(page) -> dict:
    return page.evaluate("""() => { const r = document.querySelector('#canvas img').getBoundingClientRect();
        return {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY, width: r.width}; }""")


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_the_whole_image_is_on_the_first_screen_also_during_a_drag(url, width, height):
    """At a laptop's and a phone's first screen the whole image shows, after an example and while a drag runs:
    the status lines and the progress bar sit below it, so when they grow they do not push it down."""
    with open_app(url, width, height) as page:
        stats = page.locator("#stats")
        sync_api.expect(stats).to_contain_text(BUNDLED, timeout=60_000)
        page.wait_for_function("() => document.querySelector('#canvas img').naturalWidth > 0")
        first = _image_box(page)
        assert first["bottom"] <= height and first["width"] >= 0.6 * min(width - 40, 512), first
        assert page.locator("#stats").bounding_box()["y"] >= first["bottom"], "the status lines are below the image"
        page.get_by_role("button", name="Open the mouth", exact=True).click()
        sync_api.expect(stats).to_contain_text("press Start", timeout=60_000)
        page.get_by_role("button", name="Start").click()
        sync_api.expect(page.locator("#drag-progress progress")).to_have_count(1, timeout=60_000)
        sync_api.expect(stats).to_contain_text("running", timeout=60_000)
        boxes = []
        for _ in range(6):                                                   # the status lines at their longest
            boxes.append(_image_box(page))
            page.wait_for_timeout(250)
        page.get_by_role("button", name="Stop").click()
        sync_api.expect(stats).to_contain_text("drag(s) done", timeout=60_000)
        boxes.append(_image_box(page))
    assert all(abs(b["top"] - first["top"]) < 1 and b["bottom"] <= height for b in boxes), (first, boxes)
