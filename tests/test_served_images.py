"""Image outputs are written once per content and atomically (draggan/app/served.py): fetching an image while
the same image is returned again (by this or another session) must deliver it whole, with no h11 traceback."""

from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image as PILImage

from bench.soak import free_port
from draggan.app import served


def _image(seed: int, size: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_an_image_is_written_once_under_its_content(tmp_path):
    img = _image(0)
    first = served.cached_image(img, tmp_path, "png")
    inode = os.stat(first).st_ino
    again = served.cached_image(PILImage.fromarray(img), tmp_path, "png")
    assert again == first and os.stat(again).st_ino == inode, "the same content is reused, not rewritten"
    assert np.array_equal(np.asarray(PILImage.open(first)), img), "the file is the image"
    other = served.cached_image(_image(1), tmp_path, "png")
    assert other != first and Path(other).parent == Path(first).parent == tmp_path / served.FOLDER
    assert sorted(p.name for p in (tmp_path / served.FOLDER).iterdir()) == sorted([Path(first).name, Path(other).name]), \
        "no staging file is left behind"
    assert served.cached_image(None, tmp_path, "png") is None and served.cached_image("a.png", tmp_path, "png") == "a.png"
    with pytest.raises(TypeError, match="uint8"):
        served.cached_image(img.astype(np.float32), tmp_path, "png")


def test_the_components_look_built_in_and_hand_over_cached_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    img, layer = _image(2, 32), np.zeros((32, 32, 4), np.uint8)
    image, editor, slider = served.Image(type="numpy"), served.ImageEditor(type="numpy"), served.ImageSlider(type="numpy")
    assert [c.get_block_name() for c in (image, editor, slider)] == ["image", "imageeditor", "imageslider"]
    cache = Path(image.GRADIO_CACHE) / served.FOLDER
    assert Path(image.postprocess(img).path).parent == cache
    value = editor.postprocess({"background": img, "layers": [layer], "composite": None})
    assert Path(value.background.path).parent == cache and Path(value.layers[0].path).parent == cache
    assert value.composite is None
    pair = slider.postprocess((img, img))
    assert pair.root[0].path == pair.root[1].path and Path(pair.root[0].path).parent == cache


def _fetch(port: int, url_path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", url_path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    except http.client.IncompleteRead as exc:
        return exc.partial
    finally:
        conn.close()


def test_fetching_an_image_while_it_is_returned_again_gets_it_whole(tmp_path, monkeypatch):
    """Gradio's own array path rewrote the cached file in place: ~4 % of such fetches came back truncated,
    and uvicorn logged `LocalProtocolError: Too little data for declared Content-Length`."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    img = _image(3, 384)
    with gr.Blocks() as demo:
        component = served.Image(type="numpy", format="png")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        path = component.postprocess(img).path
        expected = Path(path).read_bytes()
        stop = threading.Event()

        def return_again() -> None:          # another session returning the same image, over and over
            while not stop.is_set():
                component.postprocess(img)

        worker = threading.Thread(target=return_again, daemon=True)
        worker.start()
        try:
            bodies = [_fetch(port, f"/gradio_api/file={path}") for _ in range(300)]
        finally:
            stop.set()
            worker.join()
        broken = sum(body != expected for body in bodies)
        assert broken == 0, f"{broken} of {len(bodies)} fetches were not the whole image"
    finally:
        demo.close()
