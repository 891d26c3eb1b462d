"""A real browser drives the app: headless Debian Chromium via Playwright clicks a handle and a target on the
image, presses Start, sees the image change, presses Stop and sees the drag recorded."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import pytest

from _app_server import running_app

CHROMIUM = os.environ.get("DRAGGAN_CHROMIUM", "/usr/bin/chromium")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip("Debian chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def url():
    with pytest.MonkeyPatch.context() as mp, running_app(mp) as (address, _studio):
        yield address


@contextlib.contextmanager
def open_app(url: str, width: int, height: int) -> Iterator["sync_api.Page"]:
    """A headless Chromium page of the given viewport size on the app, once its image is shown."""
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_selector("#canvas img", timeout=120_000)
            yield page
        finally:
            browser.close()


@pytest.fixture()
def page(url):
    with open_app(url, 1280, 960) as page:
        yield page


def test_click_points_start_and_stop(page):
    image = page.locator("#canvas img")
    stats = page.locator("#stats")
    start_src = image.get_attribute("src")
    box = image.bounding_box()
    assert box["width"] >= 256, "the 64 px model is shown upscaled"

    image.click(position={"x": box["width"] * 0.30, "y": box["height"] * 0.30})
    sync_api.expect(image).not_to_have_attribute("src", start_src, timeout=30_000)
    handle_src = image.get_attribute("src")
    image.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.45})
    sync_api.expect(image).not_to_have_attribute("src", handle_src, timeout=30_000)
    sync_api.expect(stats).to_contain_text("1 point pair(s)", timeout=30_000)
    points_src = image.get_attribute("src")

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
    sync_api.expect(lr).to_have_value("0.001", timeout=30_000)
    for name, value in [("Cartoon faces (bundled, offline, 128)", "0.004"), ("Tiny StyleGAN2", "0.001")]:
        page.get_by_label("Model", exact=True).first.click()
        page.get_by_role("option", name=name).first.click()
        sync_api.expect(stats).to_contain_text(name, timeout=60_000)
        sync_api.expect(lr).to_have_value(value, timeout=30_000)


def _red_dot_centre(page, src: str) -> tuple[float, float]:
    """Centre (as a fraction of width/height) of the red handle marker in the displayed image."""
    import io

    import numpy as np
    from PIL import Image

    data = page.request.get(src).body()
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 170) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    ys, xs = np.nonzero(red)
    assert xs.size > 10, "no handle marker found in the displayed image"
    return (xs.mean() + 0.5) / rgb.shape[1], (ys.mean() + 0.5) / rgb.shape[0]


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
        fx, fy = _red_dot_centre(page, image.get_attribute("src"))
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
        sync_api.expect(status).to_contain_text("pixel + multi-scale")
        sync_api.expect(page.locator("#stats")).to_contain_text("photo holiday.png", timeout=10_000)
        page.locator("#photo-panel").screenshot(path=str(tmp_path / "photo-panel.png"))
        shot = os.environ.get("DRAGGAN_SCREENSHOT_DIR")
        if shot:
            page.locator("#photo-panel").screenshot(path=os.path.join(shot, "photo-panel.png"))
            page.screenshot(path=os.path.join(shot, "photo-app.png"), full_page=True)
