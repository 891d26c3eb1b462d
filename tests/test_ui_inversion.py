"""The app's "Edit your own photo" flow on the tiny StyleGAN2 fixture: upload → inversion in a background job →
drag on the session's own tuned generator; cancel, bad uploads, session isolation, export, Gradio callbacks.

CPU, one torch thread, a few inversion steps; the Hugging Face Hub is never contacted (LPIPS falls back).
"""

from __future__ import annotations

import gc
import io
import threading
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _numerics import assert_same_image_u8
from _plain_gpu import PLAIN
from draggan.checkpoints import ModelUnavailableError, load_generator
from draggan.inversion import align, losses
from _app_server import app_panels
from draggan.engine import snapshot as snapshots
from draggan.inversion.presets import PRESETS
from draggan.service import gpu, handlers, photo
from draggan.service.drawing import display_scale, to_display
from draggan.app.events import unchanged
from draggan.service.models import ModelRef
from draggan.service.handlers import UserError
from draggan.service.models import GeneratorCache, shared_cache

DATA = Path(__file__).parent / "data"
SG2 = DATA / "stylegan2-tiny-64.pkl"
STEPS = dict(w_steps=6, wplus_steps=4, pti_steps=6)
FAST = dict(w_avg_samples=200)


REF = ModelRef(str(SG2), "tiny")


@pytest.fixture()
def G() -> torch.nn.Module:
    """The process-wide shared copy the sessions start from."""
    return shared_cache().get(str(SG2), torch.device("cpu"))


def _tuned(ui) -> torch.nn.Module:
    return gpu.generator(ui.model, "cpu")


def _ws(ui) -> torch.Tensor:
    return torch.from_numpy(snapshots.full_latent(ui.snap))


def _in_background(ui, *args, **kwargs):
    """Start an inversion and follow it in a thread, as the Invert event does; returns (job, thread)."""
    job = photo.start_inversion(ui, *args, **kwargs)
    thread = threading.Thread(target=lambda: [None for _ in photo.follow_inversion(ui, job)], daemon=True)
    thread.start()
    return job, thread


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(ref):
        raise ModelUnavailableError(f"Model file '{ref.filename}' is not available: Hub unreachable (test). Connect")

    monkeypatch.setattr(losses, "fetch_from_hub", unreachable)
    monkeypatch.setattr(align, "fetch_from_hub", unreachable)


def _photo(G: torch.nn.Module, seed: int, path: Path) -> Path:
    """A 'photo': an image the fixture makes, saved larger and off-square so the app must crop and resize."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, None, truncation_psi=0.5), noise_mode="const")
    arr = (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    big = Image.fromarray(arr).resize((128, 128), Image.BICUBIC)
    canvas = Image.new("RGB", (160, 128), (30, 30, 30))
    canvas.paste(big, (16, 0))
    canvas.save(path)
    return path


def _state(G: torch.nn.Module, seed: int = 0) -> handlers.UIState:
    config = handlers.make_config(lr=2e-3, max_steps=3, mask_lambda=20.0)
    return handlers.make_state(REF, "cpu", seed, 0.7, "w+", config, render_every=1)


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _click(ui, x, y):
    s = display_scale(ui.height, ui.width)
    dx, dy = to_display((x, y), s)
    return handlers.add_point(ui, (round(dx), round(dy)))


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def invert_blocking(ui, file: str, w_steps, wplus_steps, pti_steps, **kwargs):
    """`photo.start_inversion`, followed to its end as the page would (the job is returned)."""
    job = photo.start_inversion(ui, file, w_steps, wplus_steps, pti_steps, **kwargs)
    for _ in photo.follow_inversion(ui, job, min_interval=3600.0):
        pass
    return job


def test_upload_invert_then_drag_on_the_tuned_generator(G, tmp_path):
    before = _clone(G)
    ui = _state(G)
    seed_image = ui.image.copy()
    file = _photo(G, 3, tmp_path / "me.png")
    target, message = photo.prepare_photo(G, str(file))
    assert target.shape == (64, 64, 3) and "resized to 64×64 px (from 160×128 px)" in message

    job = invert_blocking(ui, str(file), **STEPS, **FAST)
    result = job.result
    assert job.error is None and not job.cancelled and ui.job is None
    assert ui.photo is not None and ui.photo.name == "me.png" and ui.photo.steps == 16
    assert np.array_equal(ui.photo.target, target), "the job inverts exactly the prepared crop"
    assert np.array_equal(ui.image, ui.start_image)
    assert_same_image_u8(ui.start_image, result.image, "the session's render of the inverted latent")
    assert not np.array_equal(ui.start_image, seed_image)
    assert ui.model.private and ui.model == result.model and Path(ui.model.source).is_dir()
    assert _tuned(ui) is not G and ui.photo.base == REF
    assert ui.space == "w+" and torch.equal(_ws(ui), torch.from_numpy(result.w))
    assert ui.photo.loss_name == "pixel+multiscale" and "LPIPS weights unavailable" in ui.photo.loss_note
    readout = photo.quality_html(ui.photo)
    assert f"PSNR {result.psnr:.1f} dB" in readout and "LPIPS" not in readout.split("<details>")[0]
    assert "compared pixel by pixel" in readout and "timm" not in readout.split("<details>")[0]
    assert "<details>" in readout and "Hub unreachable" in readout, "the reason is kept, collapsed"
    assert "photo *me.png*" in handlers.stats_text(ui)

    _click(ui, 20, 20)
    _click(ui, 28, 24)
    tuned_before = _clone(_tuned(ui))
    job = handlers.run_blocking(ui)
    assert job.steps == 3 and not np.array_equal(ui.image, ui.start_image)
    assert np.array_equal(ui.image, PLAIN["render"](ui.model, "cpu", ui.snap))
    assert all(torch.equal(tuned_before[k], v) for k, v in _tuned(ui).state_dict().items()), "dragging edits w only"
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()), "the shared generator changed"
    handlers.reset_image(ui)
    assert np.array_equal(ui.image, result.image), "Reset returns to the inverted photo"


def test_cancel_stops_the_worker_and_keeps_the_image(G, tmp_path):
    ui = _state(G)
    start = ui.image.copy()
    file = _photo(G, 4, tmp_path / "slow.png")
    job, thread = _in_background(ui, str(file), 4000, 0, 0, w_avg_samples=200)
    deadline = time.monotonic() + 60
    while (job.last is None or job.last.step < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ui.inverting
    with pytest.raises(UserError, match="Cancel"):
        _click(ui, 5, 5)
    with pytest.raises(UserError, match="Cancel"):
        photo.start_inversion(ui, str(file), 2, 0, 0)
    assert "inverting the photo · step " in handlers.stats_text(ui) and "/4000" in handlers.stats_text(ui)
    assert "<progress value=" in photo.progress_html(job)
    message = photo.cancel_inversion(ui)
    assert message.startswith("Inversion cancelled after") and "of 4000 steps" in message
    assert job.cancelled and job.done.is_set() and job.last.step < 4000
    thread.join(5)
    assert not thread.is_alive() and not ui.inverting and ui.job is None
    assert ui.photo is None and ui.model == REF and np.array_equal(ui.image, start)
    assert photo.cancel_inversion(ui) == "No inversion is running."
    _click(ui, 5, 5)                       # the session is usable again


def test_bad_uploads_get_clear_messages(G, tmp_path, monkeypatch):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(UserError, match=r"This photo cannot be used: the upload is not an image .*PNG, JPEG"):
        photo.prepare_photo(G, str(text))
    with pytest.raises(UserError, match="Upload a photo first"):
        photo.prepare_photo(G, None)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 90)).save(tiny)
    with pytest.raises(UserError, match=r"too small \(20×90 px\).*at least 32 px"):
        photo.prepare_photo(G, str(tiny))
    huge = tmp_path / "huge.png"
    Image.new("RGB", (400, 300)).save(huge)
    with pytest.raises(UserError, match=r"too large \(400×300 px = 0.1 MP\); the limit is 0.05 MP"):
        photo.prepare_photo(G, str(huge), max_megapixels=0.05)
    with monkeypatch.context() as m:                     # PIL refuses to even open a decompression bomb
        m.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
        with pytest.raises(UserError, match="far too large"):
            photo.prepare_photo(G, str(huge))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_png_bytes(Image.fromarray(np.random.RandomState(0).randint(0, 255, (80, 80, 3),
                                                                                        np.uint8)))[:300])
    with pytest.raises(UserError, match="This photo cannot be used"):
        photo.prepare_photo(G, str(truncated))

    grey = tmp_path / "grey.png"
    Image.new("L", (100, 100), 90).save(grey)
    target, message = photo.prepare_photo(G, str(grey))
    assert (target == 90).all() and target.shape == (64, 64, 3) and "grey photo: converted to colour" in message
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:32, :, 3] = 255
    clear = tmp_path / "clear.png"
    Image.fromarray(rgba, "RGBA").save(clear)
    target, message = photo.prepare_photo(G, str(clear))
    assert (target[:32] == [0, 0, 255]).all() and (target[32:] == 255).all()
    assert "transparent areas filled with white" in message

    ui = _state(G)
    with pytest.raises(UserError, match="not an image"):
        photo.start_inversion(ui, str(text), 2, 0, 0)
    with pytest.raises(UserError, match="W steps"):
        photo.start_inversion(ui, str(grey), -1, 0, 0)
    with pytest.raises(UserError, match="at least one W or W\\+ step"):
        photo.start_inversion(ui, str(grey), 0, 0, 5)
    assert ui.job is None and ui.photo is None, "a refused upload changes nothing"


def test_two_sessions_never_share_tuned_generators(G, tmp_path):
    before = _clone(G)
    a, b = _state(G), _state(G, seed=1)
    runs = [_in_background(a, str(_photo(G, 5, tmp_path / "a.png")), **STEPS, **FAST),
            _in_background(b, str(_photo(G, 6, tmp_path / "b.png")), **STEPS, **FAST)]
    for job, thread in runs:
        thread.join(120)
        assert job.error is None and job.result is not None
    ga, gb = _tuned(a), _tuned(b)
    assert a.model != b.model and G is not ga and G is not gb and ga is not gb
    params_a, params_b = ga.state_dict(), gb.state_dict()
    assert all(params_a[k].data_ptr() != params_b[k].data_ptr() for k in params_a)
    assert any(not torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert a.photo.name == "a.png" and b.photo.name == "b.png"

    # The tuned generator belongs to its session: releasing the session (tab closed, new model/seed) frees it.
    ref = weakref.ref(ga)
    folder = Path(a.model.source)
    del ga, params_a
    runs.clear()
    handlers.release(a)
    gc.collect()
    assert ref() is None, "the released session's tuned generator is still referenced"
    assert not folder.exists(), "and its files are deleted"
    assert Path(b.model.source).is_dir() and _tuned(b) is gb


def test_photo_session_export(G, tmp_path):
    ui = _state(G)
    with pytest.raises(UserError, match="Only an image made from your photo"):
        photo.export_tuned_generator(ui, tmp_path)
    invert_blocking(ui, str(_photo(G, 7, tmp_path / "cat photo.png")), **STEPS, **FAST)
    _click(ui, 20, 20)
    _click(ui, 26, 26)
    handlers.run_blocking(ui)

    latent = handlers.export_latent(ui, tmp_path)
    assert latent.name == "draggan-stylegan2-tiny-64-photo-cat-photo-ws.npy"
    assert np.allclose(np.load(latent), _ws(ui).numpy())
    with pytest.raises(UserError, match="started from your photo"):
        handlers.export_recipe(ui, tmp_path)
    assert handlers.export_animation(ui, "gif", tmp_path).stat().st_size > 0

    bundle = photo.export_tuned_generator(ui, tmp_path)
    with zipfile.ZipFile(bundle) as zf:
        names = sorted(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / "draggan-stylegan2-tiny-64-photo-cat-photo-tuned-generator"
    assert names == [f"{folder.name}/{n}" for n in ("config.json", "edited-ws.npy", "inverted-ws.npy",
                                                    "model.safetensors")]
    reloaded = load_generator(folder, device="cpu")
    edited = torch.from_numpy(np.load(folder / "edited-ws.npy"))
    inverted = torch.from_numpy(np.load(folder / "inverted-ws.npy"))
    with torch.no_grad():
        again = reloaded.synthesis(edited, noise_mode="const")
        start = reloaded.synthesis(inverted, noise_mode="const")
    to_u8 = lambda img: (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()  # noqa: E731
    # the page's images come from the session's direct CPU render, these from the module's forward
    assert_same_image_u8(to_u8(again), ui.image, "the bundle reproduces the edited image")
    assert_same_image_u8(to_u8(start), ui.start_image, "and the inverted start image")


def _demo(monkeypatch, **studio_kw):
    return app_panels(monkeypatch, **studio_kw)


def test_studio_photo_flow(G, tmp_path, monkeypatch):
    """The Gradio handlers: prepare, invert (streamed), the shared cache untouched, seed change drops the photo."""
    import gradio as gr

    infos, warnings_shown = [], []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings_shown.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    studio, page, panels = _demo(monkeypatch, cache=GeneratorCache(max_items=2))
    state = panels.model.init_session(None, 0, 0.7, "w+", 2e-3, 2, 1, 20.0, progress=None)[page.state]
    shared = studio.cache.get(state.model.source, studio.device)
    before = _clone(shared)
    assert panels.photo.preset("Quick") == dict(zip([page.w_steps, page.wplus_steps, page.pti_steps],
                                                    PRESETS["Quick"].steps))
    assert "Runs on **cpu**" in panels.photo.estimate(100, 50, 100, state)[page.estimate]
    assert "once it starts" in panels.photo.estimate(1, 1, 1)[page.estimate]

    file = _photo(shared, 8, tmp_path / "face.png")
    out = panels.photo.prepare_photo(state, str(file), False)
    assert out[page.photo_view].shape[0] >= 64 and "Centre-cropped" in out[page.photo_status]
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert panels.photo.prepare_photo(state, str(bad), False) == unchanged()
    assert "not an image" in warnings_shown[-1]

    outputs = list(panels.photo.invert_photo(state, str(file), False, 6, 4, 6))
    final = outputs[-1]
    assert final[page.state] is state and state.photo is not None and state.model.private
    assert "Photo inverted" in final[page.stats] and "PSNR" in handlers.stats_text(state)
    assert not any(i.startswith("Photo inverted") for i in infos), "said in the status line, not a toast"
    assert np.array_equal(np.asarray(final[page.image]), np.asarray(handlers.view(state)))
    assert "PSNR" in final[page.photo_status] and "compared pixel by pixel" in final[page.photo_status]
    assert final[page.ai_mark] is True, "an edited photo's PNG gets the visible AI mark by default"
    assert final[page.space] == "w+"
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    assert studio.cache.get(state.photo.base.source, studio.device) is shared
    assert "measured on this server" in panels.photo.estimate(6, 4, 6, state)[page.estimate]

    # The space radio cannot turn a photo session into W (it would change the image); it flips back.
    out = next(panels.model.change_latent(state, 0, 0.7, "w"))
    assert out == {page.space: "w+"} and "W+" in warnings_shown[-1] and state.photo is not None
    assert panels.export.export(state, "tuned")[page.exported]["value"].endswith("-tuned-generator.zip")
    assert panels.export.export(state, "recipe") == unchanged() and "started from your photo" in warnings_shown[-1]

    folder, base = Path(state.model.source), state.photo.base
    assert next(panels.model.change_latent(state, 0, 0.7, "w+")) == unchanged(), "the same seed keeps the photo"
    assert state.photo is not None
    new_state = next(panels.model.change_latent(state, 5, 0.7, "w+"))[page.state]
    assert new_state is not state and new_state.photo is None and new_state.model == base
    assert not folder.exists(), "a new seed drops the photo's tuned generator"


def test_studio_cancel(G, tmp_path, monkeypatch):
    import gradio as gr

    infos = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: infos.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    studio, page, panels = _demo(monkeypatch)
    state = panels.model.init_session(None, 0, 0.7, "w+", 2e-3, 2, 1, 20.0, progress=None)[page.state]
    start = state.image.copy()
    file = _photo(G, 9, tmp_path / "x.png")
    stream = panels.photo.invert_photo(state, str(file), False, 4000, 0, 0)
    first = next(stream)
    assert state.inverting and "inv-status" in first[page.photo_status]
    canceller = threading.Timer(0.3, lambda: panels.photo.cancel_photo(state))
    canceller.start()
    outputs = list(stream)
    canceller.join()
    assert not state.inverting and state.photo is None and np.array_equal(state.image, start)
    assert "cancelled" in outputs[-1][page.photo_status].lower()


def test_the_chosen_preset_reaches_the_inversion_with_the_visitors_step_counts():
    """The page's preset choice travels with the step fields: its projection size (the CPU preset's 256 px)
    and the visitor's own step counts; an unknown name is refused like any other bad setting."""
    fast = photo.make_inversion_config(7, 3, 2, "Fast")
    assert (fast.w_steps, fast.wplus_steps, fast.pti_steps) == (7, 3, 2)
    assert fast.project_size == 256 and fast.project_bf16
    assert not photo.make_inversion_config(7, 3, 2, "Quick").project_bf16
    assert photo.make_inversion_config(7, 3, 2, "Best").project_size == 0
    assert photo.make_inversion_config(7, 3, 2).project_size == 0
    assert photo.preset_steps("Fast") == PRESETS["Fast"].steps
    with pytest.raises(UserError, match="Unknown preset"):
        photo.make_inversion_config(7, 3, 2, "Turbo")
