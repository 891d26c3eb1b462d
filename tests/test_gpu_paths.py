"""The GPU's branches, run on the CPU: each test says why it stands in for CUDA.

No GPU runs in CI, yet the code takes other branches on CUDA: the fp16 layers compute in float16
(`networks/precision.py`), the masked L1 follows its device plan (`engine/phase_l1.py`), the session renders
with `synthesis(ws)` instead of the CPU's direct forms (`networks/stylegan2_render.py`), and the app's presets and
concurrency depend on the device. Every one of these is selectable here, so each branch runs on the CPU
against the CPU's own. `bench.gpu_check` repeats the equality checks on a real GPU.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bench.gpu_check import HANDLE_PX, MIN_PSNR, drag, handle_gap, psnr_u8, quick_generator, stand_in_half
from conftest import private_caches
from draggan.engine import DragConfig, DragSession, RenderPolicy
from draggan.engine.phase_l1 import phase_l1
from draggan.images import to_uint8
from draggan.networks.precision import block_dtype, set_half_dtype
from draggan.networks.stylegan3 import Generator as StyleGAN3

pytestmark = pytest.mark.usefixtures("one_thread")

HALF = stand_in_half(torch.device("cpu"))   # bfloat16 where oneDNN runs it natively, else float16


def _with_half(G: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    return set_half_dtype(copy.deepcopy(G), dtype)


def _stylegan3() -> StyleGAN3:
    torch.manual_seed(0)
    return StyleGAN3(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=2),
                     channel_base=512, channel_max=32, num_layers=6, num_critical=2,
                     num_fp16_res=4).eval().requires_grad_(False)


@pytest.mark.parametrize("device,expected", [("cpu", torch.float32), ("cuda", torch.float16), ("cuda:1", torch.float16),
                                             ("mps", torch.float32)])
def test_the_fp16_layers_follow_nvidias_device_rule_unless_a_dtype_is_set(device, expected):
    """The dtype choice itself, given a device string (no tensor needs to live there)."""
    assert block_dtype(True, False, torch.device(device)) == expected
    assert block_dtype(True, True, torch.device(device)) == torch.float32, "force_fp32 wins"
    assert block_dtype(False, False, torch.device(device)) == torch.float32, "layers not marked fp16"
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert block_dtype(True, False, torch.device(device), dtype) == dtype
    with pytest.raises(ValueError):
        set_half_dtype(quick_generator(16), torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["stylegan2", "stylegan3"])
def test_forced_half_layers_give_the_float32_image(family, dtype):
    """Stands in for CUDA's fp16 synthesis: the same casts, clamps and (float16) demodulation pre-scaling run
    in a half dtype on the CPU. The half layers really compute in it (their features are half), and the image
    stays within the GPU check's PSNR of the float32 one (measured: ~69 dB float16, ~51 dB bfloat16)."""
    if family == "stylegan3" and dtype != HALF:
        pytest.skip("StyleGAN3's filtered lrelu in this dtype runs on slow reference kernels on this CPU")
    G = quick_generator(32) if family == "stylegan2" else _stylegan3()
    ws = G.latent_from_seed(0, 0.7)
    half = _with_half(G, dtype)
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const")
        img, feats = half.synthesis(ws, noise_mode="const", return_features=True)
        unfused = half.synthesis(ws, noise_mode="const", until_block=len(feats) - 1,
                                 **({"fused_modconv": False} if family == "stylegan2" else {}))
    assert img.dtype == torch.float32 and feats[-1].dtype == dtype and unfused[-1].dtype == dtype
    assert feats[0].dtype == torch.float32 or family == "stylegan3", "the low-resolution blocks stay float32"
    image, expected = to_uint8(img), to_uint8(ref)
    assert not np.array_equal(image, expected), "the half path changed nothing: it did not run"
    assert psnr_u8(image, expected) >= MIN_PSNR


@pytest.mark.parametrize("masked", [False, True])
def test_a_short_drag_with_forced_half_layers_tracks_the_float32_drag(masked):
    """Stands in for a CUDA drag: half features reach tracking, motion supervision and (masked) the masked L1,
    and the image is rendered by `synthesis(ws)` as on a GPU. Handles within 1 px, image PSNR ≥ 35 dB."""
    from bench.app_drag import masks

    G = quick_generator(64)
    mask = masks(64)["quarter"] if masked else None
    handles, image = drag(_with_half(G, torch.float32), 8, mask, lr=2e-2)
    got_handles, got_image = drag(_with_half(G, HALF), 8, mask, direct_render=False, lr=2e-2)
    start = (32, 25)
    assert handle_gap(handles, [start]) >= 2, "the drag must move the handle for the comparison to mean anything"
    assert handle_gap(handles, got_handles) <= HANDLE_PX
    assert not np.array_equal(image, got_image), "the half layers did not run"
    assert psnr_u8(image, got_image) >= MIN_PSNR


def test_phase_l1_in_the_gpu_plan_equals_the_cpu_plan():
    """The GPU plan (all channels at once, phases only, no host sync) runs on CPU tensors with `plan="cuda"`:
    the same value and gradient as the CPU plan (chunks, cells) and as `F.interpolate`'s masked L1."""
    from test_phase_l1 import _masks, _official, _smooth

    feat_hw, scale = (12, 10), (4, 3)
    image_hw = (feat_hw[0] * scale[0], feat_hw[1] * scale[1])
    gen = torch.Generator().manual_seed(3)
    feat0 = torch.randn(6, *feat_hw, generator=gen)
    feat = feat0 + _smooth((6, *feat_hw), gen) + 0.05 * torch.randn(6, *feat_hw, generator=gen)
    for name, mask in _masks(image_hw, seed=1).items():
        leaf = feat.clone().requires_grad_(True)
        expected = _official(leaf, feat0, mask) * (6 * image_hw[0] * image_hw[1])   # l1_loss is a mean
        (g_expected,) = torch.autograd.grad(expected, [leaf])
        results = {plan: phase_l1(feat, feat0, mask, (0, feat_hw[0]), (0, feat_hw[1]), scale, (0, 0), True,
                                  chunk_elems=64, plan=plan) for plan in ("cpu", "cuda")}
        for plan, (value, grad) in results.items():
            torch.testing.assert_close(value.float(), expected.detach(), rtol=1e-5, atol=1e-5, msg=f"{plan} {name}")
            torch.testing.assert_close(grad, g_expected, rtol=1e-4, atol=1e-6, msg=f"{plan} {name}")


def test_a_session_renders_as_on_a_gpu_when_its_direct_render_is_off():
    """On a GPU `direct_render_supported` is False: no preview, every image `synthesis(ws)` (fused, fp16 layers). A CPU
    session with `direct_render = False` takes that branch: the run's images are all "full", each equal to
    `synthesis(ws)`, and the drag ends where the CPU path's does."""
    G = quick_generator(64)
    assert G.synthesis.direct_render_supported(torch.device("cpu"))
    assert not G.synthesis.direct_render_supported(torch.device("cuda")), "on a GPU: synthesis(ws)"
    runs = {}
    for direct in (True, False):
        session = DragSession(G, seed=0, config=DragConfig(lr=2e-2))
        session.direct_render = direct
        assert session.has_preview is direct
        session.set_points([(32, 25)], [(32, 45)])
        kinds = [r.image_kind for r in session.run(max_steps=6, policy=RenderPolicy()) if r.image is not None]
        runs[direct] = session.handles, session.render(), kinds
    handles, image, kinds = runs[False]
    assert kinds and set(kinds) == {"full"}
    with torch.no_grad():
        assert np.array_equal(image, to_uint8(G.synthesis(session.ws, noise_mode="const")))
    assert handle_gap(handles, runs[True][0]) <= HANDLE_PX
    assert psnr_u8(image, runs[True][1]) >= 45, "the direct float32 render is the synthesis image (~1 LSB)"


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "mps"])
def test_every_device_dependent_choice_given_a_device_string(device, monkeypatch, tmp_path):
    """What changes with the device, each choice made from the device string alone (the CUDA column is the
    one no CPU run reaches otherwise): jobs at once and torch threads, the photo preset and its time note,
    the start model, the render path, the fp16 layers and the masked L1's plan."""
    from draggan import settings
    from draggan.checkpoints.default_model import default_model
    from draggan.service import photo
    from draggan.service.studio import Studio
    from draggan.server.threads import thread_policy

    private_caches(monkeypatch, tmp_path)
    for name in ("DRAGGAN_CONCURRENCY", "DRAGGAN_TORCH_THREADS", "DRAGGAN_DEFAULT_MODEL", "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)
    settings.reload()
    kind = torch.device(device).type
    cuda, cpu = kind == "cuda", kind == "cpu"
    plain = settings.Settings()
    policy = thread_policy(kind, cores=16, config=plain)
    assert (policy.concurrency, policy.threads) == ((4, 4) if cuda else (2, 8))
    assert thread_policy(kind, cores=2, config=plain).concurrency == (4 if cuda else 2), \
        "on a GPU jobs are not capped by the CPU cores"
    assert Studio(device=device, hub_online=False).concurrency == thread_policy(kind).concurrency
    assert photo.default_preset(kind) == ("Fast" if cpu else "Best")
    assert ("CPU inversion is slow" in photo.estimate_text(device, 100, None)) is cpu
    assert default_model({}, cached=True) == "ffhq-512", "every tier starts on real faces where they are had"
    assert quick_generator(16).synthesis.direct_render_supported(torch.device(device)) is cpu
    assert block_dtype(True, False, torch.device(device)) == (torch.float16 if cuda else torch.float32)


def test_the_gpu_check_runs_on_the_cpu_and_fails_loudly_on_a_mismatch(tmp_path, monkeypatch):
    """`python -m bench.gpu_check --device cpu --quick` (the script a GPU session runs) works end to end and
    holds every check; with an impossible PSNR limit the same checks fail, it says MISMATCH and exits 1."""
    from bench import gpu_check

    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["rows"]
    assert {r["section"] for r in rows} == {"equality", "forked", "speed", "photo", "load"}
    checks = [r for r in rows if r["kind"] == "check"]
    assert len(checks) >= 18 and all(r["status"] == "ok" for r in checks)
    goals = [r["status"] for r in rows if r["kind"] == "goal"]
    assert goals == ["n/a"] * 4, "the four speed goals are read on a GPU only"
    assert "| equality |" in (tmp_path / "gpu_check.md").read_text()

    monkeypatch.setattr(gpu_check, "MIN_PSNR", float("inf"))
    code = gpu_check.main(["--device", "cpu", "--quick", "--sections", "equality", "--steps", "1", "--out",
                           str(tmp_path / "bad"), "--threads", str(torch.get_num_threads())])
    assert code == 1
    bad = json.loads((tmp_path / "bad" / "gpu_check.json").read_text())["rows"]
    assert any(r["status"] == "MISMATCH" for r in bad)
