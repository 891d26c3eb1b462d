"""Photos forgotten as promised: when a photo session ends, every file made from its photo is gone.

The page's outputs go through the app's own `served.Blocks.postprocess_data`, as Gradio serves them: the
crop of the upload, the inversion's previews and result, an edit, the before/after view and an export, each a
file in Gradio's cache. Releasing the session (what the reaper does when the tab closed) must leave none of
them, nor the upload, the tuned generator or the session folder, while a file another live session was also
sent (a shared image) stays.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _app_server import build_app
from draggan.engine import snapshot as snapshots
from draggan.service import handlers
from draggan.server import owned_files
from draggan.service.state import UIState

pytestmark = pytest.mark.usefixtures("one_thread")


def _files(root: Path) -> set[str]:
    return {os.path.realpath(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files}


def _fn(demo, outputs_include, handler=None):
    for block_fn in demo.fns.values():
        if outputs_include in block_fn.outputs and (handler is None or block_fn.fn == handler):
            return block_fn
    raise LookupError(handler)


def test_ending_a_photo_session_deletes_every_file_made_from_its_photo(monkeypatch, tmp_path):
    import gradio as gr
    from gradio.state_holder import SessionState

    gradio_dir = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(gradio_dir))
    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: pytest.fail(msg))
    demo = build_app(monkeypatch, tmp_path)
    page, panels = demo.page, demo.panels
    state = SessionState(demo)
    ui = panels.model.init_session(None, 0, 0.7, "w+", 2e-3, 3, 1, 20.0, progress=None)[page.state]
    invert_fn = _fn(demo, page.photo_view, panels.photo.invert_photo)
    prepare_fn = _fn(demo, page.photo_view, panels.photo.prepare_photo)
    export_fn = _fn(demo, page.exported)

    def send(block_fn, out):
        state[page.state._id] = ui
        return asyncio.run(demo.postprocess_data(block_fn, out, state))

    shared = send(invert_fn, {page.image: ui.image})           # a seed image: another visitor sees it too
    other = UIState(**{**{f: getattr(ui, f) for f in ("model", "device", "seed", "psi", "snap", "image",
                                                       "start_image")}})
    shared_files = set(ui.files)
    for path in shared_files:
        owned_files.claim(other, path)
    before = _files(gradio_dir)

    G = panels.model.studio.cache.get(ui.model.source, torch.device("cpu"))
    z = torch.from_numpy(np.random.RandomState(7).randn(1, G.z_dim)).float()
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, None, truncation_psi=0.5), noise_mode="const")
    upload_dir = gradio_dir / "upload-hash"
    upload_dir.mkdir(parents=True)
    upload = upload_dir / "me.png"                               # as Gradio stores an upload
    Image.fromarray((img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).byte().numpy()).resize((96, 80)).save(upload)

    send(prepare_fn, panels.photo.prepare_photo(ui, str(upload), False))
    for out in panels.photo.invert_photo(ui, str(upload), False, 3, 2, 3, "Quick"):
        send(invert_fn, out)
    assert ui.photo is not None and ui.model.private
    tuned = Path(ui.model.source)
    ui.snap = snapshots.set_points(ui.snap, [(20, 20)], [(28, 24)])
    handlers.run_blocking(ui)                                    # an edit of the photo
    send(invert_fn, {page.image: handlers.view(ui), page.compare: (ui.start_image, ui.image)})
    send(export_fn, panels.export.export(ui, "png", False))
    send(export_fn, panels.export.export(ui, "tuned", False))
    workdir = ui.workdir

    made = _files(gradio_dir) - before
    assert len(made) >= 6, f"crop, previews, result, edit, exports, upload: {sorted(made)}"
    assert os.path.realpath(upload) in ui.files and made <= ui.files, "every file it was sent is its own"
    assert any(p.endswith(".zip") for p in made) and any("draggan-images" in p for p in made)

    handlers.release(ui)                                         # the session ended
    assert _files(gradio_dir) & made == set(), "a file made from the photo outlived its session"
    assert not upload_dir.exists() and not tuned.exists() and not workdir.exists()
    assert shared_files and all(os.path.exists(p) for p in shared_files), "another session still shows these"
    assert all(owned_files.holders(p) == 1 for p in shared_files)
    handlers.release(other)
    assert not any(os.path.exists(p) for p in shared_files), "the last holder gone, so are they"
