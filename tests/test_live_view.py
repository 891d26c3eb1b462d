"""The live view as cheap as the drag step: time-driven render policy, previews, masked steps on windows.

Policy decisions are checked on a fake clock (pure numbers); previews against the full render of the
same latent; masked steps computed on the fixed region's window against the whole-map path, step for step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _numerics import assert_same_drag, first_gradient
from conftest import fixture_path
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragConfig, DragSession, RenderPolicy
from draggan.engine.features import UpsampledView, masked_l1
from draggan.networks.generator import Box
from draggan.networks.stylegan2_render import preview_dtype
from draggan.networks.stylegan2 import Generator
from draggan.networks.stylegan2_window import plan

pytestmark = pytest.mark.usefixtures("one_thread")


def _load(name: str) -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path(name))["G_ema"]).eval().requires_grad_(False)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


# ---------------------------------------------------------------------------------------------- policy

def _simulate(policy: RenderPolicy, step_s: float, render_s: float, steps: int) -> tuple[float, float, int, float]:
    """A drag on a fake clock: (total time, render time, renders, longest time without a new view)."""
    now = 0.0
    schedule = policy.start(now)
    rendered, renders, last_view, longest = 0.0, 0, 0.0, 0.0
    for _ in range(steps):
        now += step_s
        if schedule.step_done(now, step_s):
            now += render_s
            schedule.rendered(now, render_s)
            rendered += render_s
            renders += 1
            longest = max(longest, now - last_view)
            last_view = now
    return now, rendered, renders, max(longest, now - last_view)


@pytest.mark.parametrize("step_s,render_s", [(0.5, 0.3), (0.15, 0.4), (0.05, 0.01), (1.0, 0.1)])
def test_policy_keeps_the_render_share_and_the_view_age(step_s, render_s):
    policy = RenderPolicy(share=0.2, max_age_s=2.0, max_share=0.35)
    total, rendered, renders, longest = _simulate(policy, step_s, render_s, 400)
    forced = render_s / (policy.max_age_s - step_s)  # bound on the share when freshness forces each render
    assert forced <= policy.max_share
    assert (rendered - render_s) / total <= max(policy.share, forced) + 1e-9, "(the measuring render is free)"
    assert longest <= max(policy.max_age_s, step_s + render_s) + 1e-9, "the view went stale"
    assert renders >= int((total - step_s) / (policy.max_age_s + render_s))
    # within budget and never stale: rendering is not skipped when it is cheap
    if render_s <= 0.2 * step_s:
        assert renders >= 399


@pytest.mark.parametrize("step_s,render_s", [(0.15, 0.9), (0.3, 2.5)])
def test_policy_caps_the_share_when_renders_are_slow(step_s, render_s):
    """Renders too slow for freshness within max_share (a loaded CPU): the cap wins, the view ages."""
    policy = RenderPolicy(share=0.2, max_age_s=2.0, max_share=0.35)
    total, rendered, renders, longest = _simulate(policy, step_s, render_s, 400)
    assert rendered / total <= policy.max_share + render_s / total + 1e-9
    assert rendered / total >= policy.max_share - 2 * render_s / total, "freshness should still use the cap"
    assert longest > policy.max_age_s


def test_policy_renders_after_the_first_step_and_forces_a_stale_view():
    schedule = RenderPolicy(share=0.0, max_age_s=2.0).start(10.0)
    assert schedule.step_done(10.5, 0.5), "the render cost is unknown before any render: measure it"
    schedule.rendered(11.0, 0.5)
    assert not schedule.step_done(11.5, 0.5)   # share 0 allows nothing but freshness
    assert not schedule.step_done(12.0, 0.5)
    assert schedule.step_done(12.6, 0.5)       # 1.6 s old: one more step and a render would make it 2.6 s
    schedule.rendered(13.0, 0.4)
    assert not schedule.step_done(13.5, 0.5)


@pytest.mark.parametrize("step_s,render_s", [(0.085, 0.5), (0.1, 0.28), (0.3, 0.6)])
def test_a_run_that_must_measure_the_render_cost_keeps_the_view_age(step_s, render_s):
    """The first run of a process does not know the render cost: it renders after its first step to learn it,
    and that render does not use up the share the later ones need (at 1024 the next view came 2.3 s later)."""
    policy = RenderPolicy()
    assert policy.start(0.0).render_s is None
    _, _, _, longest = _simulate(policy, step_s, render_s, 200)
    assert longest <= policy.max_age_s + 1e-9


def test_policy_validation():
    for bad in (dict(share=1.0), dict(share=-0.1), dict(max_age_s=0), dict(share=0.4, max_share=0.3),
                dict(max_share=1.0)):
        with pytest.raises(ValueError):
            RenderPolicy(**bad)


# ---------------------------------------------------------------------------------------------- previews

def _small_generator(resolution: int, square: bool = True, architecture: str = "skip",
                     channel_base: int | None = None, channel_max: int = 32) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=channel_base or resolution * 32, channel_max=channel_max,
                                           square=square, architecture=architecture)).eval().requires_grad_(False)


def test_preview_is_close_to_the_full_render_and_says_what_it_is():
    G = _load("stylegan2-tiny-64.pkl")
    s = DragSession(G, seed=0)
    assert s.has_preview
    full = s.render()
    preview = s.render(preview=True)
    assert preview.shape == full.shape == (64, 64, 3) and preview.dtype == np.uint8
    if preview_dtype() == torch.bfloat16:
        assert not np.array_equal(preview, full), "a preview that is the full render saves nothing"
    else:   # no bfloat16 convolutions on this CPU (oneDNN below AVX-512): below 512 px the preview is exact
        assert np.array_equal(preview, full)
    assert _psnr(preview, full) > 35


@pytest.mark.parametrize("square,architecture", [(False, "skip"), (True, "orig")])
def test_preview_of_non_square_and_orig_networks(square, architecture):
    G = _small_generator(64, square, architecture, channel_base=1024, channel_max=16)
    for block in (getattr(G.synthesis, f"b{res}") for res in G.synthesis.block_resolutions):
        for layer in (getattr(block, name) for name in ("conv0", "conv1") if hasattr(block, name)):
            layer.noise_strength.data.fill_(0.3)  # make the constant noise visible
    s = DragSession(G, seed=0)
    full, preview = s.render(), s.render(preview=True)
    assert preview.shape == full.shape == (64, 64 if square else 32, 3)
    assert _psnr(preview, full) > 35
    quiet = DragSession(G, seed=0, config=DragConfig(noise_mode="none"))
    assert _psnr(quiet.render(preview=True), quiet.render()) > 35 and not np.array_equal(quiet.render(), full)


@pytest.mark.parametrize("square,architecture", [(True, "skip"), (False, "skip"), (True, "orig")])
def test_half_resolution_last_block_preview_is_close_to_the_exact_image(square, architecture):
    """The preview's last block at half resolution keeps the image (32.5 dB here; with the up-sampling
    kernel not flipped it falls to 27–33 dB) and its shape."""
    from draggan.images import to_uint8

    G = _small_generator(128, square, architecture)
    ws = G.latent_from_seed(0, 0.7)
    exact = to_uint8(G.synthesis.render_direct(ws))
    half = to_uint8(G.synthesis.render_direct(ws, preview=True, half_top=True))
    assert half.shape == exact.shape == (128, 128 if square else 64, 3)
    assert _psnr(half, exact) > 32.5
    assert _psnr(half, exact) < _psnr(to_uint8(G.synthesis.render_direct(ws, preview=True, half_top=False)), exact)


@pytest.mark.parametrize("resolution,half_top", [(256, False), (512, True)])
def test_previews_run_the_last_block_at_half_resolution_from_512_pixels(resolution, half_top):
    from draggan.images import to_uint8

    G = _small_generator(resolution)
    s = DragSession(G, seed=0)
    preview = s.render(preview=True)
    assert np.array_equal(preview, to_uint8(G.synthesis.render_direct(s.ws, preview=True, half_top=half_top)))
    assert not np.array_equal(preview, to_uint8(G.synthesis.render_direct(s.ws, preview=True, half_top=not half_top)))


def test_previews_are_float32_where_bfloat16_convolutions_are_not_supported(monkeypatch):
    from draggan.networks import stylegan2_render as preview

    G = _small_generator(512)
    ws = G.latent_from_seed(0, 0.7)
    monkeypatch.setattr(preview, "_bf16_convolutions_supported", lambda: False)
    assert preview.preview_dtype() == torch.float32
    f32 = G.synthesis.render_direct(ws, preview=True)
    assert torch.equal(f32, preview._render(G.synthesis, ws, "const", torch.float32, half_top=True))
    assert not torch.equal(f32, preview._render(G.synthesis, ws, "const", torch.bfloat16, half_top=True))
    monkeypatch.setattr(preview, "_bf16_convolutions_supported", lambda: True)
    assert preview.preview_dtype() == torch.bfloat16


@pytest.mark.parametrize("model", ["fixture", "bundled"])
def test_the_direct_float32_render_is_the_synthesis_image(model):
    """The session's exact image on CPU (`render_direct`, float32) equals `synthesis(ws)` up to float
    rounding: |Δ| < 1e-4 and uint8 values at most one apart."""
    from draggan.checkpoints import load_generator
    from draggan.images import to_uint8

    G = _load("stylegan2-tiny-64.pkl") if model == "fixture" else load_generator("cartoon-faces-128", device="cpu")
    for seed in (0, 1):
        ws = G.latent_from_seed(seed, 0.7)
        with torch.no_grad():
            ref = G.synthesis(ws, noise_mode="const")
        direct = G.synthesis.render_direct(ws, "const")
        assert direct.dtype == torch.float32 and direct.shape == ref.shape
        assert (direct - ref).abs().max().item() < 1e-4
        a, b = to_uint8(direct).astype(int), to_uint8(ref).astype(int)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
        session = DragSession(G, w=ws)
        assert np.array_equal(session.render(), to_uint8(direct)), "the session shows that image"


def test_stylegan3_preview_falls_back_to_the_full_render():
    s = DragSession(_load("stylegan3-t-tiny-64.pkl"), seed=0)
    assert not s.has_preview
    assert np.array_equal(s.render(preview=True), s.render())


def test_policy_run_yields_previews_and_ends_on_the_exact_full_render():
    s = DragSession(_load("stylegan2-tiny-64.pkl"), seed=0, config=DragConfig(lr=2e-3))
    s.set_points([(20, 30)], [(50, 30)])
    results = list(s.run(max_steps=6, policy=RenderPolicy(share=0.9, max_age_s=2.0, max_share=0.95)))
    assert [r.step for r in results] == [1, 2, 3, 4, 5, 6, 6], "the last step comes twice: preview, then exact"
    kinds = [r.image_kind for r in results]
    assert all((r.image is None) == (r.image_kind is None) for r in results)
    assert kinds[0] == "preview" and kinds[-2:] == ["preview", "full"]
    assert results[-2].end is None and results[-1].end == "limit"
    assert np.array_equal(results[-1].image, s.render())
    assert np.array_equal(results[-2].image, s.render(preview=True)), "the closing preview shows the last latent"
    # a stop between steps: the extra result carries the full render too; the exact render's cost is known
    # now (milliseconds here), so no closing preview goes before it
    steps = s.run(max_steps=50, policy=RenderPolicy())
    next(steps)
    s.stop()
    rest = list(steps)
    assert [r.image_kind for r in rest] == ["full"] and rest[-1].end == "stopped"
    assert np.array_equal(rest[-1].image, s.render())
    # without previews (render_every) the run ends on the exact image alone
    s.set_points([(20, 30)], [(50, 30)])
    plain = list(s.run(max_steps=3, policy=RenderPolicy(preview=False)))
    assert len(plain) == len({r.step for r in plain}) == 3 and plain[-1].image_kind == "full"
    assert "preview" not in {r.image_kind for r in plain}


def test_render_costs_are_remembered_per_network_and_seed_the_schedule():
    """A run that knows what a render costs does not render right after its first step to find out."""
    import gc

    from draggan.engine import render_costs

    G = _load("stylegan2-tiny-64.pkl")
    assert render_costs.cost(G.synthesis, "preview") is None
    s = DragSession(G, seed=0)
    s.render(preview=True)
    s.render()
    assert render_costs.cost(G.synthesis, "preview") > 0 and render_costs.cost(G.synthesis, "full") > 0
    render_costs.record(G.synthesis, "full", 3.0)
    assert render_costs.cost(G.synthesis, "full") > 1.5, "a moving average of the recent renders"
    assert RenderPolicy().start(0.0).step_done(0.1, 0.1), "unknown cost: render after the first step"
    assert not RenderPolicy().start(0.0, render_s=0.5).step_done(0.1, 0.1), "known cost: the view is fresh"
    entries = len(render_costs._costs)
    del s, G
    gc.collect()
    assert len(render_costs._costs) == entries - 1, "a network let go takes its entry with it"


def test_render_every_still_renders_full_images():
    s = DragSession(_load("stylegan2-tiny-64.pkl"), seed=0)
    s.set_points([(20, 30)], [(50, 30)])
    results = list(s.run(max_steps=4, render_every=2))
    assert [r.image_kind for r in results] == [None, "full", None, "full"]


# ---------------------------------------------------------------------------------------------- masked windows

@pytest.mark.parametrize("image_hw,feat_hw", [((40, 24), (10, 6)), ((35, 21), (10, 6))])
def test_masked_l1_on_a_window_equals_the_whole_map(image_hw, feat_hw):
    """Integer scale (interpolated slabs) and non-integer scale (gathers), on a window with an origin."""
    feat0 = torch.randn(1, 5, *feat_hw)
    feat = (feat0 + 0.3 * torch.randn(1, 5, *feat_hw)).requires_grad_(True)
    mask = torch.zeros(image_hw)
    mask[9:27, 7:19] = 1
    mask[20, 10] = 0.5
    expected = F.l1_loss(F.interpolate(feat, list(image_hw), mode="bilinear") * mask,
                         F.interpolate(feat0, list(image_hw), mode="bilinear") * mask)
    (g_expected,) = torch.autograd.grad(expected, [feat])
    view = UpsampledView.create(feat_hw, image_hw)
    r0, r1 = view.block_rows(9, 26)
    c0, c1 = view.block_cols(7, 18)
    assert (r0, c0) != (0, 0)
    got = masked_l1(view, feat[0, :, r0:r1, c0:c1], feat0[0, :, r0:r1, c0:c1], mask, chunk_elems=5 * 12 * 4,
                    origin=(r0, c0))
    (g_got,) = torch.autograd.grad(got, [feat])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        value = masked_l1(view, feat[0, :, r0:r1, c0:c1], feat0[0, :, r0:r1, c0:c1], mask, origin=(r0, c0))
    torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-7)
    with pytest.raises(AssertionError, match="window"):
        masked_l1(view, feat[0, :, r0 + 1:r1, c0:c1], feat0[0, :, r0 + 1:r1, c0:c1], mask, origin=(r0 + 1, c0))


class _Recorder:
    """Wraps a session's synthesis network and records the feature windows it is asked for."""

    def __init__(self, synthesis) -> None:
        self.synthesis = synthesis
        self.boxes = []

    def features(self, ws, block, box=None, **kwargs):
        self.boxes.append(box)
        return self.synthesis.features(ws, block, box, **kwargs)


def _masked_drags(mask: np.ndarray, steps: int = 4, later_mask: np.ndarray | None = None,
                  points=([(40, 44)], [(50, 52)])):
    """The same drag with windowed and whole-map synthesis; `later_mask` replaces the mask after 2 steps."""
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=128, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=1024, channel_max=16)).eval().requires_grad_(False)
    runs = {}
    for windowed in (True, False):
        s = DragSession(G, seed=3, config=DragConfig(lr=1e-2, windowed=windowed, feature_block=4))
        s.set_mask(mask)
        s.set_points(*points)
        recorder = None
        if windowed:
            recorder = s._step.synthesis = _Recorder(s._step.synthesis)
        results, gradient = [], None
        for i in range(steps):
            if i == 2 and later_mask is not None:
                s.set_mask(later_mask)
            results.append(s.step())
            if i == 0:
                gradient = first_gradient(s)
        runs[windowed] = (results, gradient, recorder)
    return runs


def _assert_same_drags(runs) -> None:
    """Equal in exact arithmetic, so compared where rounding cannot grow (`_numerics`): handles, losses (the
    fixed-region term's too) and the first step's gradient, not the latents after Adam's steps."""
    (got, g_got, _), (expected, g_expected, _) = runs[True], runs[False]
    assert_same_drag(got, expected, g_got, g_expected, losses=("loss", "loss_mask"))
    assert got[-1].loss_mask > 0, "the fixed-region term must be active"


def test_masked_step_on_the_fixed_region_window_equals_the_whole_map():
    mask = np.zeros((128, 128), np.float32)
    mask[:64, :64] = 1  # a quarter of the image fixed
    runs = _masked_drags(mask)
    _assert_same_drags(runs)
    recorder = runs[True][2]
    assert len(recorder.boxes) == 4
    for box in recorder.boxes:
        assert (box.r1 - box.r0) * (box.c1 - box.c0) < 0.5 * 64 * 64
        assert len(plan(recorder.synthesis, 4, box)) >= 1, "the window must skip whole-map work"


def test_masked_step_with_a_painted_flexible_area_uses_the_whole_map():
    mask = np.ones((128, 128), np.float32)
    mask[20:80, 20:80] = 0  # flexible area painted around the drag; fixed = the rest
    runs = _masked_drags(mask, steps=3)
    _assert_same_drags(runs)
    assert runs[True][2].boxes == [Box(0, 64, 0, 64)] * 3, "the whole map, every block in full"


def test_a_mask_changed_during_a_drag_reads_the_first_step_features_of_its_new_region():
    first = np.zeros((128, 128), np.float32)
    first[:40, :40] = 1
    later = np.zeros((128, 128), np.float32)
    later[80:110, 60:90] = 1  # outside the window the first step computed: F0 is recomputed there
    runs = _masked_drags(first, steps=5, later_mask=later)
    _assert_same_drags(runs)
    boxes = runs[True][2].boxes
    assert len(boxes) == 6 and all((b.r1 - b.r0) * (b.c1 - b.c0) < 0.5 * 64 * 64 for b in boxes)
    view = UpsampledView.create((64, 64), (128, 128))
    expected = (*view.block_rows(80, 109), *view.block_cols(60, 89))
    assert (boxes[3].r0, boxes[3].r1, boxes[3].c0, boxes[3].c1) == expected, "F0 of the new fixed region"


def test_a_fixed_region_far_from_the_handle_is_computed_as_its_own_window():
    mask = np.zeros((128, 128), np.float32)
    mask[88:, 88:] = 1  # bottom-right corner; the handle is near the top-left: their join is most of the map
    runs = _masked_drags(mask, steps=3, points=([(10, 12)], [(20, 22)]))
    _assert_same_drags(runs)
    boxes = runs[True][2].boxes
    view = UpsampledView.create((64, 64), (128, 128))
    fixed = (*view.block_rows(88, 127), *view.block_cols(88, 127))
    assert len(boxes) == 6 and [(b.r0, b.r1, b.c0, b.c1) for b in boxes[1::2]] == [fixed] * 3
    assert all(b.r1 <= fixed[0] for b in boxes[0::2]), "the handles' window stays apart"


def test_the_masked_step_bench_prints_every_case_against_the_whole_map_step(capsys, monkeypatch):
    """bench.drag_step --masked on a small 128-px network: the two unmasked steps and the three masks (fixed
    25 %, 89 %, 97 %), each as a multiple of the whole-map step, and the worst masked one last."""
    import re

    from bench import drag_step

    monkeypatch.setattr(drag_step, "bench_generator", lambda size: _small_generator(size))
    drag_step.run_masked(steps=1, warmup=0, device=torch.device("cpu"), size=128)
    lines = capsys.readouterr().out.strip().splitlines()
    ratios = {m.group(1).strip(): float(m.group(2)) for line in lines
              if (m := re.match(r"(.+): median .* = ([\d.]+)x whole-map", line))}
    assert list(ratios) == ["unmasked windowed", "unmasked whole-map", "masked quarter, fixed 25%",
                            "masked painted, fixed 89%", "masked flexible, fixed 97%"]
    assert ratios["unmasked whole-map"] == 1.0 and all(r > 0 for r in ratios.values())
    worst = max(r for name, r in ratios.items() if name.startswith("masked"))
    assert re.fullmatch(r"worst masked / whole-map ([\d.]+) \(goal ≤ 1.2\)", lines[-1])
    assert float(lines[-1].split()[4]) == pytest.approx(worst, abs=0.01)


def test_the_app_drag_bench_times_steps_renders_and_prints_the_ratio_last(capsys, monkeypatch):
    """bench.app_drag end to end on a small 512-px network: per repeat the app drag shows previews and the
    exact image, and the last line is the 512 unmasked ratio (the median of the repeats)."""
    import re

    from bench import app_drag

    monkeypatch.setattr(app_drag, "generator", lambda size: _small_generator(size))
    app_drag.main(["--steps", "4", "--repeats", "2", "--sizes", "512", "--cases", "unmasked", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    ratios = [float(m.group(1)) for line in lines if (m := re.search(r"; app/bare ([\d.]+)", line))]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    assert re.search(r"full render", lines[2]) and "1 full renders" in lines[2]
    assert re.fullmatch(r"app/bare ratio [\d.]+", lines[-1])
    assert float(lines[-1].split()[-1]) == pytest.approx(sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2, abs=0.01)
