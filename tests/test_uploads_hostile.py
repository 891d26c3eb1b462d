"""Hostile uploads through the app's own handlers: photos (the upload event and Invert) and model files
(`panels.model.load_own_model`). Each must be refused with one clear line that names no server path, within
20 s and 1.5 GB of peak resident memory growth of the server process, and the session must survive it.

Photos are built byte by byte (a PNG whose header claims what the test says), so each case is exactly the
attack it names; the model files reuse the opcode assembler of tests/test_hostile_models.py.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from draggan.app.events import unchanged
from test_hostile_models import call, glob, integer, memo_bomb, network, persistent, text, tiny_generator, tup

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
SG2 = DATA / "stylegan2-tiny-64.pkl"
TIME_LIMIT_S = 20.0
MEMORY_LIMIT_MB = 1536.0
SERVER_PATH = re.compile(r"(/(tmp|root|home|usr|var|proc|etc|dev|work)\b)|([A-Za-z]:\\)")


# Model uploads are converted in a child process (about 3 s each here), so only one case per class runs
# through the app; tests/test_hostile_models.py covers each attack on the parser itself.

# ------------------------------------------------------------------ hand-made PNGs

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, rows: int | None = None, colour_type: int = 0) -> bytes:
    """A greyscale (or RGB: `colour_type=2`) 8-bit PNG claiming width × height, with `rows` rows of zeros
    (all of them if None), compressed as it is written: a 9000 × 9000 image is about 80 kB."""
    channels = 3 if colour_type == 2 else 1
    z = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels)
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def noise(fmt: str) -> bytes:
    """A 96 × 96 noise image in `fmt` (noise does not compress, so half the file is half the pixels)."""
    out = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)).save(out, fmt)
    return out.getvalue()


PHOTOS = {
    # name: (file name, bytes, words the refusal must contain)
    "decompression-bomb": ("bomb.png", lambda: png(9000, 9000), "too large"),
    "huge-dimensions": ("huge.png", lambda: png(100_000, 100_000, rows=1), "too large"),
    "truncated-png": ("half.png", lambda: noise("PNG")[: len(noise("PNG")) // 2], "cannot be used"),
    "truncated-jpeg": ("half.jpg", lambda: noise("JPEG")[: len(noise("JPEG")) // 3], "cannot be used"),
    "text-as-png": ("notes.png", lambda: b"hello, this is not an image\n" * 10, "cannot be used"),
    "pickle-as-jpeg": ("model.jpg", lambda: pickle.dumps({"a": 1}), "cannot be used"),
}


# ------------------------------------------------------------------ measuring

def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next reading is this case's peak (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Bounded:
    """Time, peak memory growth and the warnings shown while refusing one upload."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings

    def __enter__(self) -> Bounded:
        self.count = len(self.warnings)
        self.exact_peak = _reset_peak()
        self.rss = _status("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self.start
        self.growth_mb = (_status("VmHWM") if self.exact_peak else _status("VmRSS")) - self.rss

    def message(self) -> str:
        assert self.elapsed <= TIME_LIMIT_S, f"took {self.elapsed:.1f} s"
        assert self.growth_mb < MEMORY_LIMIT_MB, f"grew {self.growth_mb:.0f} MB"
        shown = self.warnings[self.count:]
        assert shown, "refused without telling the visitor"
        text_ = shown[-1]
        assert "\n" not in text_ and len(text_) < 400, text_
        assert not SERVER_PATH.search(text_) and tempfile.gettempdir() not in text_, text_
        return text_


@pytest.fixture()
def app_demo(monkeypatch, tmp_path):
    """(studio, page, panels, warnings) of the app's handlers without a server, on the tiny fixture; the
    converted cache and temp folder live in tmp_path."""
    import gradio as gr

    from _app_server import build_app

    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(str(msg)))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: None)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "app-tmp" / "gradio"))
    demo = build_app(monkeypatch, tmp_path)
    yield demo.panels.model.studio, demo.page, demo.panels, warnings


def _session(page, panels):
    ui = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
    assert ui is not None
    return ui


@pytest.mark.parametrize("case", list(PHOTOS))
def test_hostile_photo_is_refused_on_upload_and_on_invert(app_demo, tmp_path, case) -> None:
    _, page, panels, warnings = app_demo
    ui = _session(page, panels)
    name, make, words = PHOTOS[case]
    file = tmp_path / name
    file.write_bytes(make())
    with Bounded(warnings) as upload:
        assert panels.photo.prepare_photo(ui, str(file), False) == unchanged()
    assert words in upload.message()
    with Bounded(warnings) as invert:
        assert list(panels.photo.invert_photo(ui, str(file), False, 2, 0, 0)) == []
    assert words in invert.message()
    assert ui.job is None and ui.photo is None and ui.workdir.is_dir(), "the session survives the refusal"
    assert panels.photo.prepare_photo(ui, None, False) == unchanged()


def _torch_zip_running(marker: Path) -> bytes:
    """A real `torch.save` zip whose pickle reduces to `os.system('touch MARKER')`."""
    import torch

    class Payload:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    out = io.BytesIO()
    torch.save({"G_ema": Payload()}, out)
    return out.getvalue()


def _safetensors(metadata: dict | None) -> bytes:
    import safetensors.torch

    return safetensors.torch.save(tiny_generator().state_dict(), metadata=metadata)


MODELS = {
    # name: (file name, builder(tmp_path) -> bytes, words the refusal must contain)
    "class-name-memo-bomb": ("bomb.pkl", lambda t: network(persistent(memo_bomb(40))), "Could not load"),
    "numpy-object-bomb": ("np.pkl", lambda t: network(
        call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(integer(2**29)),
             text("O"))), "Could not load"),
    "torch-zip-reduce-os-system": ("evil.pkl", lambda t: _torch_zip_running(t / "RAN"), "Could not load"),
    "safetensors-without-config": ("lone.safetensors", lambda t: _safetensors(None), "Could not load"),
    "safetensors-huge-header": ("head.safetensors", lambda t: struct.pack("<Q", 2**40) + b"{}", "Could not load"),
    "wrong-type": ("model.exe", lambda t: b"MZ" + b"\0" * 100, "not a model file"),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_hostile_model_upload_is_refused_through_the_app(app_demo, tmp_path, case) -> None:
    _, page, panels, warnings = app_demo
    ui = _session(page, panels)
    model_before = ui.model
    name, make, words = MODELS[case]
    file = tmp_path / "upload" / name
    file.parent.mkdir()
    file.write_bytes(make(tmp_path))
    with Bounded(warnings) as bounded:
        assert panels.model.load_own_model(ui, str(file), "", 0, 0.7, "w+", progress=None) == unchanged()
    message = bounded.message()
    assert words in message, message
    assert not (tmp_path / "RAN").exists(), "the pickle ran code"
    assert ui.model == model_before and ui.workdir.is_dir(), "the session keeps its model"
