"""The launched app under ZeroGPU's contract (`DRAGGAN_FORKED_GPU=1`: every GPU call in a forked worker, values
pickled both ways): the `/drag` API call and a visitor's browser drag both work, and the drag result reaches the
session (Undo then has something to undo)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from _app_server import running_app

gradio_client = pytest.importorskip("gradio_client")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


@pytest.fixture(scope="module")
def forked_app():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRAGGAN_FORKED_GPU", "1")
        with running_app(mp) as (url, studio):
            yield url
    from draggan import settings
    settings.reload()


def test_api_drag_under_the_forked_worker_contract(forked_app):
    client = gradio_client.Client(forked_app, verbose=False)
    path, info = client.predict("Tiny StyleGAN2 (local)", 0, json.dumps([[20, 20, 34, 30]]), 4, 0.7, "w+", 0.002,
                                api_name="/drag")
    assert info["steps"] == 4 and info["start_image_changed"]
    assert np.asarray(Image.open(path)).shape[:2] == (64, 64)
    with pytest.raises(gradio_client.exceptions.AppError, match="outside"):
        client.predict("Tiny StyleGAN2 (local)", 0, "[[20, 20, 99, 30]]", 2, 0.7, "w+", 0.002, api_name="/drag")


def test_browser_drag_under_the_forked_worker_contract(forked_app):
    chromium = os.environ.get("DRAGGAN_CHROMIUM", "/usr/bin/chromium")
    if not (os.path.exists(chromium) or shutil.which("chromium")):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium if os.path.exists(chromium) else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 960})
            page.goto(forked_app)
            image = page.locator("#canvas img")
            stats = page.locator("#stats")
            image.wait_for(timeout=120_000)
            box = image.bounding_box()
            for fx, fy in ((0.30, 0.30), (0.55, 0.45)):
                before = image.get_attribute("src")
                image.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
                sync_api.expect(image).not_to_have_attribute("src", before, timeout=30_000)
            sync_api.expect(stats).to_contain_text("1 point pair(s)", timeout=30_000)
            points_src = image.get_attribute("src")
            page.get_by_role("button", name="Start").click()
            sync_api.expect(stats).to_contain_text("drag(s) done", timeout=120_000)
            assert image.get_attribute("src") != points_src
            page.get_by_role("button", name="Undo").click()
            sync_api.expect(stats).to_contain_text("point pair(s)", timeout=60_000)
        finally:
            browser.close()
