"""A real browser drives the app: headless Debian Chromium via Playwright clicks a handle and a target on the
image, presses Start, sees the image change, presses Stop and sees the drag recorded."""

from __future__ import annotations

import os
import shutil

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


@pytest.fixture()
def page(url):
    executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 960})
        page.goto(url)
        page.wait_for_selector("#canvas img", timeout=120_000)
        yield page
        browser.close()


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
