"""Real-photo inversion: recovery of a generated image, progress/cancel, upload validation, LPIPS loading.

Everything runs on CPU with the tiny StyleGAN2 fixture; the Hugging Face Hub is never contacted (the
download boundary `draggan.inversion.losses.fetch_from_hub` is replaced in every test).
"""

from __future__ import annotations

import io
import threading
import types

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from _numerics import assert_same_image_u8
from draggan import settings
from draggan.checkpoints import ModelUnavailableError, load_generator
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragSession
from draggan.inversion import align
from draggan.inversion import (LPIPS_NAME, PIXEL_NAME, InversionCancelled, InversionConfig, invert, losses,
                               prepare_image)
from draggan.inversion.export import save_tuned_generator

from conftest import fixture_path

# The fixture makes images from a known latent: seed 1 at ψ = 0.4, rendered with the generator's own noise.
SEED, PSI = 1, 0.4


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path("stylegan2-tiny-64.pkl"))["G_ema"])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every download fails as it does without network; tests that want weights patch in local files."""
    calls: list = []

    def unreachable(ref):
        calls.append(ref)
        raise ModelUnavailableError(f"Model file '{ref.filename}' is not available: Hub unreachable (test). Connect")

    monkeypatch.setattr(losses, "fetch_from_hub", unreachable)
    monkeypatch.setattr(align, "fetch_from_hub", unreachable)
    return calls


def _target(G: torch.nn.Module) -> np.ndarray:
    z = torch.from_numpy(np.random.RandomState(SEED).randn(1, G.z_dim)).float()
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, None, truncation_psi=PSI), noise_mode="const")
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_recovers_generated_image(G: torch.nn.Module, tmp_path) -> None:
    """Projection (W, W+) + pivotal tuning reproduce a generated image at ≥ 30 dB, with a falling loss.

    Noise fitting is off: the target uses the generator's own constant noise, which the inversion then
    keeps, so the image is exactly reachable; noise fitting is exercised in `test_shared_generator_untouched`.
    """
    target = _target(G)
    before = _state(G)
    events = []
    cfg = InversionConfig(w_steps=60, wplus_steps=40, pti_steps=100, pti_lr=1e-3, optimize_noise=False,
                          w_avg_samples=1000, loss="auto", log_every=10, preview_every=25)
    result = invert(G, target, cfg, progress=events.append)

    assert result.loss_name == PIXEL_NAME and "unavailable" in result.loss_note and result.lpips is None
    assert result.psnr >= 30.0, f"PSNR {result.psnr:.2f} dB"
    assert result.w.shape == (1, G.num_ws, G.w_dim)
    with torch.no_grad():
        recon = result.G_tuned.synthesis(result.w, noise_mode="const")
        projected_only = G.synthesis(result.w, noise_mode="const")
    # The closing image is the direct render on a CPU: the tuned network's image up to float rounding.
    assert_same_image_u8(result.image, (recon[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).byte().numpy())
    err_tuned = (recon.clamp(-1, 1) - torch.from_numpy(target).permute(2, 0, 1)[None] / 127.5 + 1).abs().mean()
    err_proj = (projected_only.clamp(-1, 1) - torch.from_numpy(target).permute(2, 0, 1)[None] / 127.5 + 1).abs().mean()
    assert err_tuned < 0.7 * err_proj, "pivotal tuning should clearly improve on the projection alone"

    # History: the reconstruction loss averaged over each window of 10 steps, never rising from one window to
    # the next over all three stages, and ending well below where it started.
    steps = [s for s, _ in result.history]
    values = [v for _, v in result.history]
    assert steps == list(range(10, 201, 10))
    assert all(b <= a for a, b in zip(values, values[1:])), values
    assert values[-1] < 0.2 * values[0]

    # Progress: one event per step, stages in order, previews every 25 steps and at each stage's end.
    assert [e.step for e in events] == list(range(1, 201)) and {e.total_steps for e in events} == {200}
    assert [e.stage for e in events] == ["w"] * 60 + ["w+"] * 40 + ["pti"] * 100
    with_preview = [e.step for e in events if e.preview is not None]
    assert with_preview == [25, 50, 60, 75, 100, 125, 150, 175, 200]
    assert events[-1].preview.shape == (64, 64, 3) and events[-1].preview.dtype == np.uint8
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())

    # The drag engine, given the tuned generator and latent, starts from the reconstruction (its direct CPU
    # render against the module's forward: equal up to values that round either way).
    assert_same_image_u8(DragSession(result.G_tuned, w=result.w).render(), result.image)

    # Export: the tuned generator round-trips through the converted-model format and the model loader.
    weights = save_tuned_generator(result.G_tuned, tmp_path / "tuned.safetensors")
    reloaded = load_generator(weights, device="cpu", use_cache=False)
    with torch.no_grad():
        assert torch.equal(reloaded.synthesis(result.w, noise_mode="const"), recon)


def test_projection_at_a_smaller_size_skips_the_top_block_and_tuning_fits_the_full_image(G) -> None:
    """`project_size`: the projection fits the 32-px skip image (the top block never runs, forwards or
    backwards, until the tuning), then the tuning at full size; the result is the full-size reconstruction.
    The presets are the page's table: each a normal entry, the CPU one projecting at 256 px."""
    from draggan.inversion.presets import PRESETS, default_preset, get_preset
    from draggan.inversion.projection import projection_resolution

    assert projection_resolution(G, 32) == 32 and projection_resolution(G, 0) == 64
    assert projection_resolution(G, 40) == 64 and projection_resolution(G, 256) == 64
    assert [default_preset("cpu", r) for r in (64, 128, 256, 511, 512, 1024)] == ["Quick"] * 4 + ["Fast"] * 2
    assert {default_preset(d, r) for d in ("cuda", "mps") for r in (128, 512, 1024)} == {"Best"}
    assert get_preset("Fast").project_size == 256 and get_preset("Quick").project_size == 0
    assert get_preset("Fast").project_bf16 and not any(PRESETS[n].project_bf16 for n in ("Quick", "Balanced", "Best"))
    assert list(PRESETS) == ["Fast", "Quick", "Balanced", "Best"]
    with pytest.raises(ValueError, match="choose one of Fast, Quick"):
        get_preset("Turbo")

    target = _target(G)
    top_calls = []
    hook = G.synthesis.b64.register_forward_hook(lambda *args: top_calls.append(1))
    events = []
    try:
        cfg = get_preset("Fast").config(w_steps=30, wplus_steps=20, pti_steps=40, pti_lr=1e-3, project_size=32,
                                        optimize_noise=False, w_avg_samples=1000, preview_every=10)
        result = invert(G, target, cfg, progress=lambda e: events.append((e.stage, len(top_calls), e)))
    finally:
        hook.remove()
    projection = [e for stage, _, e in events if stage != "pti"]
    assert all(calls == 0 for stage, calls, _ in events if stage != "pti"), "the projection ran the top block"
    assert {e.preview.shape for e in projection if e.preview is not None} == {(32, 32, 3)}
    assert events[-1][2].preview.shape == (64, 64, 3) and result.image.shape == (64, 64, 3)
    assert result.psnr >= 25.0, f"PSNR {result.psnr:.2f} dB"


def test_bfloat16_projection_only_where_asked_and_supported_and_never_the_tuning(G, monkeypatch) -> None:
    """`project_bf16` (the Fast preset): the projection's image and loss run under bfloat16 autocast on a CPU
    whose oneDNN runs bfloat16 convolutions, for StyleGAN2; the latents, the loss value the optimiser sees and
    the whole tuning stay float32; elsewhere it is the float32 projection. Its fit is close to float32's."""
    from draggan.inversion import projection
    from draggan.inversion.config import StepTracker
    from draggan.inversion.pti import tune_generator

    cpu, asked = torch.device("cpu"), InversionConfig(project_bf16=True)
    monkeypatch.setattr(projection, "preview_dtype", lambda: torch.bfloat16)
    assert projection.projection_dtype(G, asked, cpu) == torch.bfloat16
    assert projection.projection_dtype(G, InversionConfig(), cpu) == torch.float32
    assert projection.projection_dtype(G, asked, torch.device("cuda")) == torch.float32
    assert projection.projection_dtype(types.SimpleNamespace(family="stylegan3"), asked, cpu) == torch.float32
    monkeypatch.setattr(projection, "preview_dtype", lambda: torch.float32)   # no bfloat16 convolutions here
    assert projection.projection_dtype(G, asked, cpu) == torch.float32

    target = torch.from_numpy(_target(G)).permute(2, 0, 1)[None].float() / 127.5 - 1
    fits = {}
    for bf16 in (False, True):
        monkeypatch.setattr(projection, "preview_dtype", lambda: torch.bfloat16 if bf16 else torch.float32)
        seen: list[tuple] = []

        def fn(synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"), synth.dtype))
            return losses.multiscale_pixel_loss(synth, target)

        cfg = InversionConfig(w_steps=20, wplus_steps=10, pti_steps=2, project_bf16=True, optimize_noise=False,
                              w_avg_samples=1000)
        loss = losses.ReconstructionLoss("pixel", fn, None)
        tracker = StepTracker(cfg.total_steps, cfg.log_every, cfg.preview_every, None, None)
        proj = projection.project(G, target, loss, cfg, tracker)
        assert proj.ws.dtype == torch.float32
        tuned = tune_generator(G, proj.ws, proj.noise_bufs, target, loss, cfg, tracker)
        assert all(p.dtype == torch.float32 for p in tuned.parameters())
        want = torch.bfloat16 if bf16 else False
        assert seen == [(want, torch.float32)] * 30 + [(False, torch.float32)] * 2, seen
        with torch.no_grad():
            fits[bf16] = float(losses.multiscale_pixel_loss(G.synthesis(proj.ws, noise_mode="const"), target)[0])
    start = float(losses.multiscale_pixel_loss(G.synthesis(projection.w_statistics(G, 1000, 0, cpu)[0].expand(
        -1, G.num_ws, -1), noise_mode="const"), target)[0])
    assert fits[True] < 0.7 * start and fits[True] < 1.3 * fits[False], (fits, start)


def test_shared_generator_untouched(G: torch.nn.Module) -> None:
    """Projection with noise fitting and tuning with the locality regulariser never modify the shared G."""
    before = _state(G)
    grads_before = [p.grad for p in G.parameters()]
    cfg = InversionConfig(w_steps=6, wplus_steps=4, pti_steps=6, pti_lr=1e-3, locality_weight=0.1,
                          w_avg_samples=200, loss="pixel", log_every=2)
    result = invert(G, _target(G), cfg)

    after = G.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared generator changed"
    assert [p.grad for p in G.parameters()] == grads_before and not any(p.requires_grad for p in G.parameters())
    tuned = result.G_tuned.state_dict()
    assert result.G_tuned is not G and all(tuned[k].data_ptr() != after[k].data_ptr() for k in after)
    changed = [k for k in after if not torch.equal(tuned[k], after[k])]
    assert any(k.endswith("noise_const") for k in changed), "fitted noise maps belong in the private copy"
    assert any(k.endswith(".weight") for k in changed), "tuning changed no weight"
    assert result.loss_name == PIXEL_NAME and result.loss_note == "pixel loss requested"


def test_cancel_stops_early(G: torch.nn.Module) -> None:
    cancel = threading.Event()
    seen = []

    def progress(event) -> None:
        seen.append(event.step)
        if event.step == 5:
            cancel.set()

    cfg = InversionConfig(w_steps=50, wplus_steps=50, pti_steps=50, w_avg_samples=100, loss="pixel")
    with pytest.raises(InversionCancelled) as info:
        invert(G, _target(G), cfg, progress=progress, cancel=cancel)
    assert info.value.step == 5 and seen == [1, 2, 3, 4, 5]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_prepare_image_rejects_bad_uploads(G: torch.nn.Module, tmp_path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    for bad in (b"this is not an image", text):
        with pytest.raises(ValueError, match="not an image"):
            prepare_image(bad, G)
    with pytest.raises(ValueError, match="expected an image"):
        prepare_image(42, G)
    with pytest.raises(ValueError, match="no such image file"):
        prepare_image(tmp_path / "missing.png", G)
    with pytest.raises(ValueError, match=r"too small \(20×100 px\).*at least 32 px"):
        prepare_image(Image.new("RGB", (20, 100)), G)
    with pytest.raises(ValueError, match=r"too large \(400×300 px = 0.1 MP\); the limit is 0.05 MP"):
        prepare_image(_png(Image.new("RGB", (400, 300))), G, max_megapixels=0.05)
    with pytest.raises(ValueError, match="must be uint8 or float"):
        prepare_image(np.zeros((64, 64, 3), dtype=np.int32), G)
    with pytest.raises(ValueError, match="must be"):
        prepare_image(np.zeros((64, 64, 2), dtype=np.uint8), G)


def test_prepare_image_converts_and_crops(G: torch.nn.Module) -> None:
    grey = prepare_image(Image.new("L", (64, 64), 77), G)
    assert grey.shape == (64, 64, 3) and grey.dtype == np.uint8 and (grey == 77).all()

    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:32, :, 3] = 255                 # top half opaque red, bottom half fully transparent
    out = prepare_image(_png(Image.fromarray(rgba, "RGBA")), G)
    assert (out[:32] == [255, 0, 0]).all() and (out[32:] == 255).all()

    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, :100] = [255, 0, 0]
    wide[:, 100:200] = [0, 255, 0]
    wide[:, 200:] = [0, 0, 255]
    out = prepare_image(wide, G)          # the centre square is the green band
    assert out.shape == (64, 64, 3) and (out[:, 2:-2] == [0, 255, 0]).all()

    tall_model = types.SimpleNamespace(img_width=32, img_height=64)
    out = prepare_image(np.linspace(0, 1, 200 * 200 * 3).reshape(200, 200, 3), tall_model)
    assert out.shape == (64, 32, 3)


def _fake_lpips_files(tmp_path) -> dict[str, str]:
    gen = torch.Generator().manual_seed(3)
    backbone = {}
    for idx, module in enumerate(losses.VGG16Features().features):
        if isinstance(module, torch.nn.Conv2d):
            backbone[f"features.{idx}.weight"] = torch.randn(module.weight.shape, generator=gen) * 0.05
            backbone[f"features.{idx}.bias"] = torch.zeros(module.bias.shape)
    backbone["pre_logits.fc1.weight"] = torch.zeros(4, 4)        # classifier keys are ignored
    vgg_path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(backbone, str(vgg_path))
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
             for i, c in enumerate(losses.LPIPS_CHANNELS)}
    lin_path = tmp_path / "lin.pth"
    torch.save(heads, lin_path)
    return {"model.safetensors": str(vgg_path), "lin.pth": str(lin_path), "_backbone": backbone, "_heads": heads}


def test_lpips_weights_from_mocked_hub(G: torch.nn.Module, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _fake_lpips_files(tmp_path)
    calls = []

    def fake_download(ref):
        calls.append((ref.repo_id, ref.filename, ref.revision))
        return files[ref.filename]

    monkeypatch.setattr(losses, "fetch_from_hub", fake_download)
    cfg = InversionConfig(w_steps=2, wplus_steps=1, pti_steps=1, w_avg_samples=100, loss="auto",
                          vgg16_repo="test/vgg", vgg16_file="model.safetensors", lpips_repo="test/lpips",
                          lpips_file="lin.pth")

    lpips = losses.make_loss(cfg).lpips
    assert calls[:2] == [("test/vgg", "model.safetensors", cfg.vgg16_revision),
                         ("test/lpips", "lin.pth", cfg.lpips_revision)]
    assert torch.equal(lpips.vgg.features[28].weight, files["_backbone"]["features.28.weight"])
    assert torch.equal(lpips.lin3, files["_heads"]["lin3.model.1.weight"])
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert lpips(a, a).abs().max() < 1e-6 and (lpips(a, b) > 0).all()

    result = invert(G, _target(G), cfg)
    assert result.loss_name == LPIPS_NAME and result.loss_note is None
    assert result.lpips is not None and result.lpips > 0


def test_lpips_target_features_computed_once_and_equal_to_the_plain_distance(tmp_path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    files = _fake_lpips_files(tmp_path)
    lpips = losses.load_lpips(files["model.safetensors"], files["lin.pth"])
    loss = losses.TargetCachedLPIPS(lpips, size=32)
    target = torch.rand(1, 3, 64, 64) * 2 - 1
    passes = []
    lpips.vgg.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[0]))
    for step in range(3):
        synth = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
        got = loss(synth, target)
        (grad_got,) = torch.autograd.grad(got.sum(), synth)
        plain = lpips(losses.downsample_to(synth, 32), losses.downsample_to(target, 32))
        (grad_plain,) = torch.autograd.grad(plain.sum(), synth)
        # the same ops in the same order on the same inputs (the target's pass only skips autograd): equal bits
        assert torch.equal(got, plain) and torch.equal(grad_got, grad_plain)
    assert len(passes) == 1 + 3 + 3 * 2, "the target's VGG pass ran once; each step ran the synth only"
    target.mul_(0.5)                      # changed in place: its features are computed again
    loss(synth.detach(), target)
    assert len(passes) == 1 + 3 + 3 * 2 + 2


def test_lpips_bad_files_and_failed_download(G: torch.nn.Module, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                             _offline_hub: list) -> None:
    cfg = InversionConfig(loss="auto")
    loss = losses.make_loss(cfg)          # the autouse fixture makes every download fail
    assert loss.name == PIXEL_NAME and loss.lpips is None
    assert loss.note == ("LPIPS weights unavailable (Model file 'model.safetensors' is not available: Hub unreachable "
                         "(test)); using the pixel + multi-scale loss")
    assert _offline_hub[0].repo_id == cfg.vgg16_repo
    with pytest.raises(RuntimeError, match="LPIPS weights unavailable"):
        losses.make_loss(InversionConfig(loss="lpips"))

    files = _fake_lpips_files(tmp_path)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "lin.pth")  # 4 heads missing
    monkeypatch.setattr(losses, "fetch_from_hub", lambda ref: files[ref.filename])
    loss = losses.make_loss(InversionConfig(loss="auto", vgg16_file="model.safetensors", lpips_file="lin.pth"))
    assert loss.name == PIXEL_NAME and "5 linear heads" in loss.note


def test_cli_invert(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from draggan import cli

    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
    settings.reload()
    photo = tmp_path / "photo.jpg"
    Image.fromarray((np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8)).save(photo)
    model = str(fixture_path("stylegan2-tiny-64.pkl"))
    code = cli.main(["invert", "--model", model, str(photo), "--out", str(tmp_path / "out" / "latent.npy"),
                     "--steps", "6", "--pti-steps", "2", "--loss", "pixel", "--device", "cpu",
                     "--save-generator", str(tmp_path / "tuned"), "--save-image", str(tmp_path / "rec.png")])
    assert code == 0
    assert np.load(tmp_path / "out" / "latent.npy").shape == (1, 10, 64)
    assert Image.open(tmp_path / "rec.png").size == (64, 64)
    assert load_generator(tmp_path / "tuned", device="cpu").num_ws == 10
    assert "PSNR" in capsys.readouterr().out

    code = cli.main(["invert", "--model", model, str(tmp_path / "rec.png.missing"), "--out", str(tmp_path / "x.npy"),
                     "--device", "cpu"])
    assert code == 2 and "no such image file" in capsys.readouterr().err


def _face_landmarks(eye_l: tuple, eye_r: tuple, mouth_l: tuple, mouth_r: tuple) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = eye_l, eye_r, mouth_l, mouth_r
    return lm


def test_face_alignment_from_landmarks() -> None:
    align_face, ffhq_quad = align.align_face, align.ffhq_quad
    # An upright face: eyes 40 px apart at y = 70, mouth 40 px below. The FFHQ square is 160 px wide, centred
    # 4 px below the eyes' midpoint, so at 64 px each output pixel covers 2.5 source pixels.
    lm = _face_landmarks((80, 70), (120, 70), (90, 110), (110, 110))
    assert np.allclose(ffhq_quad(lm), [[20, -6], [20, 154], [180, 154], [180, -6]])
    yy, xx = np.mgrid[0:200, 0:200]
    photo = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    photo[65:76, 75:86] = [255, 0, 0]                        # left eye patch
    out = np.asarray(align_face(Image.fromarray(photo), 64, landmarks=lm)).astype(int)
    assert out.shape == (64, 64, 3)
    assert (out[30, 24] == [255, 0, 0]).all()                # (80, 70) → ((80-20)/2.5, (70+6)/2.5)

    # The same photo turned 90° counter-clockwise, with its landmarks turned alike, aligns to the same crop.
    rotated = np.rot90(photo).copy()

    def turn(p: tuple) -> tuple:                             # where np.rot90 moves pixel (x, y)
        return p[1], 199 - p[0]

    lm_rot = _face_landmarks(turn((80, 70)), turn((120, 70)), turn((90, 110)), turn((110, 110)))
    out_rot = np.asarray(align_face(Image.fromarray(rotated), 64, landmarks=lm_rot)).astype(int)
    assert np.abs(out_rot[4:-4, 4:-4] - out[4:-4, 4:-4]).mean() < 3


def test_face_alignment_with_dlib(monkeypatch: pytest.MonkeyPatch, tmp_path, _offline_hub: list) -> None:
    """The dlib glue (detector → largest face → 68 parts), with a stand-in dlib; without it, a clear error."""
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)          # import dlib → ImportError
    assert not align.face_alignment_available()
    with pytest.raises(align.FaceAlignmentUnavailable, match="needs dlib"):
        prepare_image(Image.new("RGB", (100, 100)), types.SimpleNamespace(img_width=64, img_height=64),
                      face_align=True)

    lm = _face_landmarks((80, 70), (120, 70), (90, 110), (110, 110))

    class Rect:
        def __init__(self, size: int) -> None:
            self.size = size

        def width(self) -> int:
            return self.size

        def height(self) -> int:
            return self.size

    def predictor(arr, face):
        assert arr.shape == (200, 200, 3) and face.size == 50       # the larger of the two detections
        return types.SimpleNamespace(parts=lambda: [types.SimpleNamespace(x=x, y=y) for x, y in lm])

    fake = types.SimpleNamespace(get_frontal_face_detector=lambda: (lambda arr, upsample: [Rect(20), Rect(50)]),
                                 shape_predictor=lambda path: predictor)
    monkeypatch.setitem(sys.modules, "dlib", fake)
    found = align.detect_landmarks(Image.new("RGB", (200, 200)), predictor_path=tmp_path / "align.dat")
    assert np.array_equal(found, lm)
    unreachable = align.fetch_from_hub                      # the fixture's stand-in for an offline Hub
    monkeypatch.setattr(align, "fetch_from_hub", lambda ref: tmp_path / "align.dat")
    assert prepare_image(Image.new("RGB", (200, 200)), types.SimpleNamespace(img_width=64, img_height=64),
                         face_align=True).shape == (64, 64, 3)
    monkeypatch.setattr(align, "fetch_from_hub", unreachable)
    with pytest.raises(align.FaceAlignmentUnavailable, match="landmark model is unavailable"):
        align.detect_landmarks(Image.new("RGB", (200, 200)))        # the Hub is "offline" in these tests
    assert _offline_hub[-1] == align.PREDICTOR_REF


@pytest.mark.parametrize("bad", [dict(w_steps=-1), dict(log_every=0), dict(loss="ssim"), dict(lr_rampdown=1.5),
                                 dict(noise_ramp_length=0), dict(w_avg_samples=1)])
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        InversionConfig(**bad)
