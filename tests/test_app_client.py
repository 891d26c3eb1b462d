"""The launched app driven headlessly through `gradio_client`: /models and /drag on a fixture model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _app_server import FIXTURE_MODELS, running_app

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server():
    with pytest.MonkeyPatch.context() as mp, running_app(mp) as (url, studio):
        yield url, studio


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[0], verbose=False)


def start_image(seed: int, psi: float) -> np.ndarray:
    from draggan.checkpoints import load_generator
    from draggan.engine import DragSession

    G = load_generator(FIXTURE_MODELS["Tiny StyleGAN2"], device="cpu")
    return DragSession(G, seed=seed, psi=psi).render()


def test_models_endpoint_lists_local_and_unavailable_models(client):
    models = client.predict(api_name="/models")
    by_source = {m["source"]: m for m in models}
    tiny = by_source[str(FIXTURE_MODELS["Tiny StyleGAN2"].resolve())]
    assert tiny["available"] and tiny["label"] == "Tiny StyleGAN2 (local)"
    hub_only = [m for m in models if m["source"] == "ffhq-512"]
    assert hub_only and not hub_only[0]["available"] and "offline mode is on" in hub_only[0]["reason"]


def test_headless_drag_changes_the_image(client):
    path, info = client.predict("Tiny StyleGAN2 (local)", 0, json.dumps([[20, 20, 34, 30]]), 4, 0.7, "w+", 0.002,
                                api_name="/drag")
    result = np.asarray(Image.open(path).convert("RGB"))
    before = start_image(0, 0.7)
    assert result.shape == before.shape == (64, 64, 3)
    assert np.abs(result.astype(int) - before.astype(int)).mean() > 1.0
    assert info["steps"] == 4 and info["targets"] == [[34.0, 30.0]] and info["start_image_changed"]


def test_bad_requests_get_clear_errors_and_the_server_keeps_running(client):
    with pytest.raises(gradio_client.exceptions.AppError, match="outside"):
        client.predict("Tiny StyleGAN2 (local)", 0, "[[20, 20, 99, 30]]", 2, 0.7, "w+", 0.002, api_name="/drag")
    with pytest.raises(gradio_client.exceptions.AppError, match="Unknown model"):
        client.predict("/etc/passwd", 0, "[[20, 20, 30, 30]]", 2, 0.7, "w+", 0.002, api_name="/drag")
    with pytest.raises(gradio_client.exceptions.AppError, match="not available"):
        client.predict("ffhq-512", 0, "[[20, 20, 30, 30]]", 2, 0.7, "w+", 0.002, api_name="/drag")
    path, info = client.predict(str(FIXTURE_MODELS["Tiny StyleGAN3"]), 1, "[[30, 30, 36, 30]]", 2, 0.7, "w", 0.002,
                                api_name="/drag")
    assert info["steps"] >= 1 and np.asarray(Image.open(path)).shape[:2] == (64, 64)
