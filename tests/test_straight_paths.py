"""Data goes one way: a photo is decoded and cropped once (at upload) and Invert fits the model to that very
crop; a model named on the page is resolved once into the ModelRef that travels on, with its step size."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from draggan import inversion
from draggan.errors import ModelUnavailableError
from draggan.inversion import align, losses

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def panels(monkeypatch):
    from _app_server import app_panels

    def unreachable(ref):
        raise ModelUnavailableError("not available: Hub unreachable (test)")

    monkeypatch.setattr(losses, "fetch_from_hub", unreachable)
    monkeypatch.setattr(align, "fetch_from_hub", unreachable)
    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: pytest.fail(msg))
    return app_panels(monkeypatch)


def test_a_photo_is_decoded_once_and_invert_uses_that_crop(panels, tmp_path, monkeypatch):
    studio, page, panels = panels
    ui = panels.model.init_session(None, 0, 0.7, "w+", 2e-3, 2, 1, 20.0, progress=None)[page.state]
    rgb = (np.random.RandomState(3).rand(90, 120, 3) * 255).astype(np.uint8)
    file = tmp_path / "me.png"
    Image.fromarray(rgb).save(file)
    decoded = []
    real = inversion.prepare
    monkeypatch.setattr(inversion, "prepare", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))

    shown = panels.photo.prepare_photo(ui, str(file), False)
    assert "from 120×90 px" in shown[page.photo_status] and decoded == [str(file)]
    crop = ui.prepared.target
    outputs = list(panels.photo.invert_photo(ui, str(file), False, 1, 1, 0, "Quick"))
    assert decoded == [str(file)], "Invert fits the model to the crop made at upload, not a second decode"
    assert ui.photo is not None and np.array_equal(ui.photo.target, crop) and outputs
    again = list(panels.photo.invert_photo(ui, str(file), False, 1, 1, 0, "Quick"))
    assert again and decoded == [str(file)]


def test_a_model_is_resolved_once_with_its_step_size(panels):
    studio, page, panels = panels
    ref = studio.resolve("cartoon-faces-128")
    assert ref.drag_lr == ref.lr == 4e-3 and ref.label == studio.label_of("cartoon-faces-128")
    tiny = studio.resolve(studio.available[0].label)
    assert tiny.source == studio.available[0].source and tiny.lr == 1e-3, "no recommendation: the default"
    assert tiny == type(tiny)(tiny.source, tiny.label), "the step size takes no part in comparing references"
    ui = panels.model.init_session(tiny.source, 0, 0.7, "w+", 1e-3, 2, 1, 20.0, progress=None)[page.state]
    assert ui.model == tiny
    out = panels.model.change_model(ui, "cartoon-faces-128", 0, 0.7, "w+", progress=None)
    new = out[page.state]
    assert out[page.lr] == 4e-3 and new.snap.config.lr == 4e-3 and new.model.lr == 4e-3
