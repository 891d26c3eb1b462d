"""Drag engine: exactness against the official DragGAN formulation, and session behaviour.

References are built the way the official `viz/renderer.py` does it: the feature block upsampled to image
size with `F.interpolate`, per-handle loops, window slicing + argmin for tracking and `grid_sample` for
motion supervision. Our engine must give the same numbers from sparse reads of the block map.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _numerics import assert_same_drag, first_gradient
from conftest import fixture_path
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragConfig, DragSession
from draggan.engine.features import UpsampledView, masked_l1
from draggan.engine.motion import motion_loss, official_grid, plan_motion
from draggan.engine.tracking import reference_features, track_points
from draggan.networks.generator import Box
from draggan.networks.stylegan2_window import plan
from draggan.networks.stylegan2 import Generator


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture_G() -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path("stylegan2-tiny-64.pkl"))["G_ema"])


def small_generator(resolution: int = 32, square: bool = True, seed: int = 0) -> Generator:
    """Random-weight StyleGAN2 small enough for many optimisation steps on a CPU."""
    torch.manual_seed(seed)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=256, channel_max=16, square=square)).eval()


# ---------------------------------------------------------------------------------------------- references

def official_track(feat_full: torch.Tensor, refs: list[torch.Tensor], points: list[list[int]], r: int) -> list:
    """Official point tracking on the full upsampled map [1, C, H, W]; points are [row, col]."""
    h, w = feat_full.shape[2:]
    out = []
    for j, point in enumerate(points):
        up, down = max(point[0] - r, 0), min(point[0] + r + 1, h)
        left, right = max(point[1] - r, 0), min(point[1] + r + 1, w)
        patch = feat_full[:, :, up:down, left:right]
        dist = torch.linalg.norm(patch - refs[j].reshape(1, -1, 1, 1), dim=1)
        _, idx = torch.min(dist.view(1, -1), -1)
        width = right - left
        out.append([idx.item() // width + up, idx.item() % width + left])
    return out


def official_motion(feat: torch.Tensor, points: list[list[int]], targets: list[list[float]], r1: int,
                    size: tuple[int, int]) -> torch.Tensor:
    """Official motion-supervision loss of the block map feat [1, C, h, w]; points/targets are [row, col]."""
    h, w = size
    feat_resize = F.interpolate(feat, [h, w], mode="bilinear")
    xx, yy = torch.meshgrid(torch.linspace(0, h, h), torch.linspace(0, w, w), indexing="ij")
    loss = feat.new_zeros([])
    for j, point in enumerate(points):
        direction = torch.Tensor([targets[j][1] - point[1], targets[j][0] - point[0]])
        if torch.linalg.norm(direction) > 1:
            distance = ((xx - point[0]) ** 2 + (yy - point[1]) ** 2) ** 0.5
            relis, reljs = torch.where(distance < r1)
            direction = direction / (torch.linalg.norm(direction) + 1e-7)
            gridh = (relis + direction[1]) / (h - 1) * 2 - 1
            gridw = (reljs + direction[0]) / (w - 1) * 2 - 1
            grid = torch.stack([gridw, gridh], dim=-1).unsqueeze(0).unsqueeze(0)
            target = F.grid_sample(feat_resize.float(), grid, align_corners=True).squeeze(2)
            loss = loss + F.l1_loss(feat_resize[:, :, relis, reljs].detach(), target)
    return loss


def ours_motion(feat: torch.Tensor, points: list[list[int]], targets: list[list[float]], r1: int,
                size: tuple[int, int]) -> torch.Tensor:
    view = UpsampledView.create(tuple(feat.shape[2:]), size)
    plan = plan_motion(torch.tensor(points), torch.tensor(targets, dtype=torch.float64), r1, official_grid(*size))
    return motion_loss(view, feat[0], plan)


# ---------------------------------------------------------------------------------------------- sparse reads

@pytest.mark.parametrize("feat_hw,image_hw", [((8, 8), (32, 32)), ((6, 10), (23, 40)), ((16, 8), (64, 32)),
                                              ((12, 12), (12, 12))])
def test_pixels_equal_full_upsampling(feat_hw, image_hw):
    feat = torch.randn(5, *feat_hw)
    full = F.interpolate(feat[None], list(image_hw), mode="bilinear")[0]
    view = UpsampledView.create(feat_hw, image_hw)
    ys, xs = torch.meshgrid(torch.arange(image_hw[0]), torch.arange(image_hw[1]), indexing="ij")
    torch.testing.assert_close(view.pixels(feat, ys, xs), full, rtol=1e-5, atol=1e-6)


def test_grid_sample_equals_official_on_full_map():
    feat = torch.randn(4, 6, 10)
    image_hw = (23, 40)
    full = F.interpolate(feat[None], list(image_hw), mode="bilinear")
    ys = torch.rand(300) * (image_hw[0] + 1.8) - 0.9   # includes reads up to 0.9 px outside the image
    xs = torch.rand(300) * (image_hw[1] + 1.8) - 0.9
    grid = torch.stack([xs / (image_hw[1] - 1) * 2 - 1, ys / (image_hw[0] - 1) * 2 - 1], dim=-1)[None, None]
    expected = F.grid_sample(full, grid, align_corners=True)[0, :, 0]
    view = UpsampledView.create((6, 10), image_hw)
    torch.testing.assert_close(view.grid_sample(feat, ys, xs), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------- tracking

@pytest.mark.parametrize("feat_hw,image_hw,radius", [((16, 16), (64, 64), 3), ((10, 6), (40, 24), 5),
                                                     ((32, 16), (64, 32), 2)])
def test_tracking_equals_bruteforce(feat_hw, image_hw, radius):
    generator = torch.Generator().manual_seed(1)
    feat0 = torch.randn(8, *feat_hw, generator=generator)
    feat = feat0 + torch.randn(8, *feat_hw, generator=generator)
    h, w = image_hw
    points = [[0, 0], [h - 1, w - 1], [1, w - 2], [h // 2, 0], [h // 2, w // 2], [h - 2, 3]]
    view = UpsampledView.create(feat_hw, image_hw)
    full0 = F.interpolate(feat0[None], [h, w], mode="bilinear")
    full = F.interpolate(feat[None], [h, w], mode="bilinear")
    refs = [full0[:, :, p[0], p[1]] for p in points]
    expected = official_track(full, refs, points, radius)

    points_rc = torch.tensor(points)
    ref = reference_features(view, feat0, points_rc)
    torch.testing.assert_close(ref, torch.cat(refs), rtol=1e-5, atol=1e-6)
    got = track_points(view, feat, ref, points_rc, radius).tolist()
    for j, (g, e) in enumerate(zip(got, expected)):
        if g == e:
            continue
        # Only an exact tie in exact arithmetic may resolve differently: near the bottom/right border the
        # upsampled map repeats the last block row/column, and the official pick is decided by rounding.
        assert abs(g[0] - points[j][0]) <= radius and abs(g[1] - points[j][1]) <= radius
        d_got = torch.linalg.norm(full[0, :, g[0], g[1]] - refs[j][0])
        d_exp = torch.linalg.norm(full[0, :, e[0], e[1]] - refs[j][0])
        torch.testing.assert_close(d_got, d_exp, rtol=1e-5, atol=1e-6)
    assert sum(g == e for g, e in zip(got, expected)) >= len(points) - 1
    moved = sum(e != p for e, p in zip(expected, points))
    assert moved >= 2, "the test should exercise real moves, not only stay-put handles"


# ---------------------------------------------------------------------------------------------- motion supervision

# Handles and targets as [row, col]. Upsampling by s repeats the first/last block row and column over the
# outer ~s/2 image pixels; a move inside that band compares two values that are equal in exact arithmetic,
# where the L1 subgradient (official or ours) is decided by rounding. The 4× cases stay clear of the band;
# the 2× cases (a one-pixel band) put handles on the border, including reads outside the image (zeros).
MOTION_CASES = [
    ((16, 16), (64, 64), 3, [[32, 32], [5, 40], [20, 6], [50, 50]],
     [[39.0, 29.0], [5.0, 60.0], [20.5, 6.0], [10.0, 12.0]]),
    ((12, 6), (48, 24), 2, [[24, 12], [8, 5], [40, 18]], [[10.0, 12.0], [30.0, 20.0], [41.0, 5.0]]),
    ((16, 8), (32, 16), 2, [[3, 13], [0, 8], [31, 15], [16, 0], [15, 8], [1, 1]],
     [[3.0, 15.0], [0.0, 2.0], [25.0, 9.0], [16.0, 7.0], [15.0, 8.6], [0.0, 0.0]]),
]


@pytest.mark.parametrize("feat_hw,image_hw,r1,points,targets", MOTION_CASES)
def test_motion_loss_and_gradient_equal_official(feat_hw, image_hw, r1, points, targets):
    feat = torch.randn(1, 6, *feat_hw, requires_grad=True)
    expected = official_motion(feat, points, targets, r1, image_hw)
    (g_expected,) = torch.autograd.grad(expected, [feat])
    got = ours_motion(feat, points, targets, r1, image_hw)
    (g_got,) = torch.autograd.grad(got, [feat])
    assert expected.item() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-7)


def test_motion_skips_handles_within_one_pixel():
    plan = plan_motion(torch.tensor([[10, 10], [20, 20]]), torch.tensor([[11.0, 10.0], [20.5, 20.5]]), 3,
                       official_grid(32, 32))
    assert plan is None


def test_masked_l1_equals_official_in_chunks():
    feat0 = torch.randn(1, 7, 10, 6)
    feat = (feat0 + 0.3 * torch.randn(1, 7, 10, 6)).requires_grad_(True)
    image_hw = (40, 24)
    mask = torch.zeros(image_hw)
    mask[5:30, 3:14] = 1
    mask[33, 20] = 0.5
    up0 = F.interpolate(feat0, list(image_hw), mode="bilinear")
    expected = F.l1_loss(F.interpolate(feat, list(image_hw), mode="bilinear") * mask, up0 * mask)
    (g_expected,) = torch.autograd.grad(expected, [feat])
    view = UpsampledView.create((10, 6), image_hw)
    got = masked_l1(view, feat[0], feat0[0], mask, chunk_elems=7 * 11 * 3)  # several row chunks
    (g_got,) = torch.autograd.grad(got, [feat])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-8)


def test_generator_step_loss_and_gradient_equal_official():
    """Through a generator: our truncated unfused synthesis + sparse loss vs. the full official path."""
    G = small_generator(resolution=32)
    block = G.synthesis.default_feature_block()
    ws = G.mapping(torch.randn(1, 16), None, truncation_psi=0.7).detach().requires_grad_(True)
    points, targets = [[16, 16], [3, 29]], [[20.0, 10.0], [3.0, 20.0]]
    _, feats = G.synthesis(ws, noise_mode="const", return_features=True)
    expected = official_motion(feats[block], points, targets, 2, (32, 32))
    (g_expected,) = torch.autograd.grad(expected, [ws])
    feat = G.synthesis(ws, noise_mode="const", until_block=block, fused_modconv=False)[-1]
    got = ours_motion(feat, points, targets, 2, (32, 32))
    (g_got,) = torch.autograd.grad(got, [ws])
    assert expected.item() > 0 and g_expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in G.parameters())


# ---------------------------------------------------------------------------------------------- sessions

def test_default_feature_blocks(fixture_G):
    big = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=512, img_channels=3,
                    synthesis_kwargs=dict(channel_base=512, channel_max=4))
    assert big.synthesis.default_feature_block() == 5 and big.synthesis.feature_shapes()[5][1:] == (128, 128)
    assert fixture_G.synthesis.default_feature_block() == 3  # 64-px model: the 32×32 block
    s = DragSession(fixture_G, config=DragConfig(feature_block=2))
    assert s.feature_block == 2 and s.feature_shape == (64, 16, 16)


def test_drag_on_fixture_moves_handle_and_leaves_generator_untouched(fixture_G):
    G = fixture_G
    before = {k: v.clone() for k, v in G.state_dict().items()}
    flags = {k: p.requires_grad for k, p in G.named_parameters()}
    s = DragSession(G, seed=0, config=DragConfig(lr=2e-3))
    start_ws = s.ws
    start_img = s.render()
    s.set_points([(20, 30)], [(30, 30)])
    results = list(s.run(max_steps=40, render_every=10))
    last = results[-1]
    assert last.done and last.distances[0] <= 2
    assert results[0].distances[0] == 10.0 and last.handles[0][0] > 26
    assert all(r.image is not None for r in results if r.step % 10 == 0) and last.image is not None
    assert last.image.shape == (64, 64, 3) and last.image.dtype == np.uint8
    assert not np.array_equal(last.image, start_img)
    ws = s.ws
    assert not torch.equal(ws[:, :6], start_ws[:, :6])
    assert torch.equal(ws[:, 6:], start_ws[:, 6:])
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None and p.requires_grad == flags[k] for k, p in G.named_parameters())


def test_w_space_optimises_one_shared_code():
    G = small_generator()
    s = DragSession(G, seed=3, config=DragConfig(space="w", lr=5e-3))
    start = s.ws
    s.set_points([(10, 12)], [(20, 12)])
    for _ in range(3):
        s.step()
    ws = s.ws
    assert not torch.equal(ws[:, 0], start[:, 0])
    assert all(torch.equal(ws[:, i], ws[:, 0]) for i in range(6))
    assert torch.equal(ws[:, 6:], start[:, 6:])


def test_given_w_and_seed_latent():
    G = small_generator()
    s = DragSession(G, seed=5, psi=0.7)
    z = torch.from_numpy(np.random.RandomState(5).randn(1, 16))
    torch.testing.assert_close(s.ws, G.mapping(z, None, truncation_psi=0.7), rtol=0, atol=0)
    w = torch.randn(16)
    s2 = DragSession(G, w=w)
    assert torch.equal(s2.ws, w.expand(1, G.num_ws, 16))


def test_mask_term_is_zero_at_first_step_then_active():
    G = small_generator()
    s = DragSession(G, seed=1, config=DragConfig(lr=5e-3))
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, 20:] = True
    s.set_mask(mask)
    s.set_points([(8, 8)], [(14, 14)])
    first = s.step()
    assert first.loss_mask == 0.0 and first.loss_motion > 0
    later = [s.step() for _ in range(3)]
    assert later[-1].loss_mask > 0
    assert later[-1].loss == pytest.approx(later[-1].loss_motion + 20.0 * later[-1].loss_mask)


def _drag(session: DragSession, steps: int) -> torch.Tensor:
    for _ in range(steps):
        session.step()
    return session.ws


def test_stop_and_resume_equal_an_uninterrupted_run():
    G = small_generator()
    cfg = DragConfig(lr=5e-3)
    points = dict(handles=[(8, 8), (24, 20)], targets=[(30, 10), (2, 26)])
    ref = DragSession(G, seed=2, config=cfg)
    ref.set_points(**points)
    expected = [r.handles for r in ref.run(max_steps=8, render_every=0)]
    assert len(expected) == 8

    s = DragSession(G, seed=2, config=cfg)
    s.set_points(**points)
    results = []
    for r in s.run(max_steps=8, render_every=0):
        results.append(r)
        if r.step == 3:
            s.stop()
    # A stop between steps ends the run with one extra result that carries the final image.
    assert [r.step for r in results] == [1, 2, 3, 3] and results[-1].image is not None
    assert [r.handles for r in results[:3]] == expected[:3] and s.handles == expected[2]
    resumed = list(s.run(max_steps=5, render_every=0))
    assert [r.step for r in resumed] == [4, 5, 6, 7, 8]
    assert [r.handles for r in resumed] == expected[3:]
    assert torch.equal(s.ws, ref.ws)


def test_stop_from_another_thread_keeps_state():
    G = small_generator()
    s = DragSession(G, seed=4, config=DragConfig(lr=5e-3))
    s.set_points([(8, 8)], [(30, 30)])
    seen = []
    for r in s.run(max_steps=200, render_every=0):
        seen.append(r)
        if r.step == 2:
            threading.Thread(target=s.stop).start()
    assert len(seen) < 20 and seen[-1].image is not None
    assert s.steps == seen[-1].step and s.handles == seen[-1].handles
    assert s.can_undo


def test_undo_redo_restore_exact_states():
    G = small_generator()
    s = DragSession(G, seed=6, config=DragConfig(lr=5e-3))
    ws0 = s.ws
    s.set_points([(8, 8)], [(16, 16)])
    list(s.run(max_steps=4, render_every=0))
    ws1 = s.ws
    s.set_points([(20, 20)], [(26, 12)])
    list(s.run(max_steps=3, render_every=0))
    ws2, h2 = s.ws, s.handles
    assert not torch.equal(ws1, ws2) and not torch.equal(ws0, ws1)

    assert s.undo() and torch.equal(s.ws, ws1) and s.handles == [(20.0, 20.0)] and s.targets == [(26.0, 12.0)]
    assert s.undo() and torch.equal(s.ws, ws0) and s.handles == [(8.0, 8.0)] and s.targets == [(16.0, 16.0)]
    assert not s.can_undo and not s.undo()
    assert s.redo() and torch.equal(s.ws, ws1) and s.handles == [(20.0, 20.0)]
    assert s.redo() and torch.equal(s.ws, ws2) and s.handles == h2
    assert not s.can_redo and not s.redo()

    s.undo()
    s.set_points([(4, 4)], [(10, 4)])
    list(s.run(max_steps=2, render_every=0))
    assert not s.can_redo, "a new drag after undo drops the redo branch"
    s.undo()
    assert torch.equal(s.ws, ws1)
    s.reset()
    assert torch.equal(s.ws, ws0) and s.handles == [] and not s.can_undo and not s.can_redo


def _session_result(G: torch.nn.Module, seed: int, points: dict, steps: int) -> tuple[torch.Tensor, list]:
    s = DragSession(G, seed=seed, config=DragConfig(lr=5e-3))
    s.set_points(**points)
    return _drag(s, steps), s.handles


def test_two_sessions_on_one_generator_do_not_interfere():
    G = small_generator()
    pa = dict(handles=[(8, 8)], targets=[(16, 12)])
    pb = dict(handles=[(24, 20), (10, 25)], targets=[(12, 20), (4, 25)])
    alone_a = _session_result(G, 1, pa, 5)
    alone_b = _session_result(G, 2, pb, 5)

    a = DragSession(G, seed=1, config=DragConfig(lr=5e-3))
    b = DragSession(G, seed=2, config=DragConfig(lr=5e-3))
    a.set_points(**pa)
    b.set_points(**pb)
    for _ in range(5):
        a.step()
        b.step()
    assert torch.equal(a.ws, alone_a[0]) and a.handles == alone_a[1]
    assert torch.equal(b.ws, alone_b[0]) and b.handles == alone_b[1]

    out = {}

    def work(name: str, seed: int, points: dict) -> None:
        out[name] = _session_result(G, seed, points, 5)

    threads = [threading.Thread(target=work, args=("a", 1, pa)), threading.Thread(target=work, args=("b", 2, pb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(out["a"][0], alone_a[0]) and out["a"][1] == alone_a[1]
    assert torch.equal(out["b"][0], alone_b[0]) and out["b"][1] == alone_b[1]


def test_points_and_config_validation():
    G = small_generator(resolution=32, square=False)
    s = DragSession(G)
    assert (s.height, s.width) == (32, 16)
    with pytest.raises(ValueError):
        s.set_points([(20, 5)], [(5, 5)])  # x beyond the 16-px width
    with pytest.raises(ValueError):
        s.set_points([(5, 5)], [])
    with pytest.raises(RuntimeError):
        s.step()
    with pytest.raises(ValueError):
        DragConfig(space="z")
    s.set_points([(8, 20)], [(8, 28)])
    r = s.step()
    assert r.step == 1 and len(r.handles) == 1 and r.loss > 0


# ---------------------------------------------------------------------------------------------- windowed synthesis

@pytest.mark.parametrize("square", [True, False])
def test_windowed_feature_block_equals_full_map(square):
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=128, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=1024, channel_max=16, square=square)).eval()
    ws = G.mapping(torch.randn(1, 16), None)
    block = 4
    full = G.synthesis(ws, until_block=block, fused_modconv=False, noise_mode="const")[-1][0]
    width = full.shape[2]
    coarse = G.synthesis(ws, until_block=2, fused_modconv=False, noise_mode="const")[-1][0]
    for box in [Box(20, 31, 5, 17), Box(0, 9, 0, 9), Box(55, 64, width - 12, width), Box(0, 64, 0, width)]:
        got, origin, none = G.synthesis.features(ws, block, box)
        assert origin == (box.r0, box.c0) and none is None
        torch.testing.assert_close(got, full[:, box.r0:box.r1, box.c0:box.c1], rtol=1e-5, atol=1e-6)
        got, origin, coarse_map = G.synthesis.features(ws, block, box, coarse=2)   # blocks up to 2 whole
        torch.testing.assert_close(got, full[:, box.r0:box.r1, box.c0:box.c1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(coarse_map, coarse, rtol=1e-5, atol=1e-6)
    assert len(plan(G.synthesis, block, Box(20, 31, 5, 17))) >= 2, "the small window must skip whole-map work"


def test_windowed_synthesis_of_the_whole_map_with_grad_layers_equals_the_synthesis():
    """A box of the whole map: every block in full; grad_layers: the same features and the same gradient of the optimised
    layers, and no gradient path through the latent of the layers above them."""
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=128, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=1024, channel_max=16)).eval().requires_grad_(False)
    ws = G.mapping(torch.randn(1, 16), None).requires_grad_(True)
    block, n_opt = 4, 4
    probe = torch.randn(G.synthesis.feature_shapes()[block])
    full = G.synthesis(ws, until_block=block, fused_modconv=False, noise_mode="const")[-1][0]
    (g_full,) = torch.autograd.grad((full * probe).sum(), [ws])
    _, height, width = G.synthesis.feature_shapes()[block]
    got, origin, _ = G.synthesis.features(ws, block, Box(0, height, 0, width), grad_layers=n_opt)
    assert origin == (0, 0)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-6)
    (g_got,) = torch.autograd.grad((got * probe).sum(), [ws])
    torch.testing.assert_close(g_got[:, :n_opt], g_full[:, :n_opt], rtol=1e-4, atol=1e-6)
    frozen = sum(getattr(G.synthesis, f"b{r}").num_conv for r in G.synthesis.block_resolutions[:3])  # block 3's first
    assert frozen >= n_opt and g_full[:, frozen:].abs().sum() > 0
    assert not g_got[:, frozen:].any(), "no style gradients above the optimised layers"


def test_windowed_drag_equals_whole_map_drag():
    """Equal in exact arithmetic: handles, losses and the first step's gradient agree (`_numerics`)."""
    G = small_generator(resolution=64)
    points = dict(handles=[(20, 22), (28, 26)], targets=[(26, 30), (22, 34)])
    runs = {}
    for windowed in (True, False):
        s = DragSession(G, seed=3, config=DragConfig(lr=5e-3, windowed=windowed))
        s.set_points(**points)
        first = s.step()
        gradient = first_gradient(s)
        runs[windowed] = ([first] + [s.step() for _ in range(5)], gradient)
    assert_same_drag(runs[True][0], runs[False][0], runs[True][1], runs[False][1])


def test_stylegan3_drag_reads_the_margin_free_layer():
    G = generator_from_persistent(read_network_pickle(fixture_path("stylegan3-t-tiny-64.pkl"))["G_ema"])
    before = {k: v.clone() for k, v in G.state_dict().items()}
    s = DragSession(G, seed=0, config=DragConfig(lr=2e-3))
    channels, size, _ = G.synthesis.feature_shapes()[s.feature_block]
    margin = G.synthesis.feature_margins()[s.feature_block]
    assert s.feature_shape == (channels, size - 2 * margin, size - 2 * margin)
    start = s.ws
    s.set_points([(20, 30)], [(30, 30)])
    results = [s.step() for _ in range(3)]
    assert results[0].loss > 0 and results[-1].distances[0] <= 10
    assert not torch.equal(s.ws[:, :6], start[:, :6]) and torch.equal(s.ws[:, 6:], start[:, 6:])
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())


def test_stop_before_iterating_a_run_is_honoured():
    s = DragSession(small_generator(), seed=0)
    s.set_points([(8, 8)], [(30, 30)])
    steps = s.run(max_steps=50)
    s.stop()
    assert list(steps) == [] and s.steps == 0
    assert len(list(s.run(max_steps=2, render_every=0))) == 2
