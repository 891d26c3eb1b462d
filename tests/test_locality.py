"""The keep-the-rest term (`locality.py`, the "freedrag-local" tracker): its mask geometry in (x, y) pixels, its
L1, the block it reads, and on the bundled model that it holds the image away from the drag still, steps off
under a painted mask and continues bit for bit from a snapshot."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _numerics import assert_same_drag, first_gradient
from conftest import fixture_path
from draggan.checkpoints import load_generator
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragConfig, DragSession
from draggan.engine.locality import COARSE_SIZE, KEEP_RADIUS, coarse_block, keep_l1, keep_mask
from draggan.engine import methods

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "cartoon-faces-128"
HANDLES, TARGETS = [(60.0, 70.0)], [(70.0, 70.0)]


def test_the_mask_frees_a_zone_around_each_segment_in_xy_pixels():
    # 128-px image read on a 32 × 32 block: cell (i, j) is centred at x = 4j + 1.5, y = 4i + 1.5
    mask = keep_mask((32, 32), (128, 128), [(10.0, 100.0)], [(40.0, 100.0)], radius_px=8)
    assert mask.shape == (32, 32) and mask.dtype == torch.float32
    assert mask[24, 2] == 0 and mask[24, 6] == 0 and mask[24, 9] == 0, "cells on the segment (y ≈ 100) are free"
    assert mask[2, 6] == 1 and mask[6, 24] == 1, "far cells, and the transposed segment's place, are kept"
    assert mask[24, 11] == 0 and mask[24, 12] == 1, "free up to 8 px past the target (x = 45.5 vs 49.5)"
    assert mask[23, 6] == 0 and mask[22, 6] == 1, "8 px to each side (y = 93.5 is free, 89.5 kept)"
    assert mask[26, 6] == 0 and mask[27, 6] == 1
    both = keep_mask((32, 32), (128, 128), [(10.0, 100.0), (100.0, 10.0)], [(40.0, 100.0), (100.0, 30.0)], 8)
    assert both[24, 6] == 0 and both[4, 24] == 0 and both.sum() < mask.sum(), "every segment frees its zone"
    wide = keep_mask((16, 32), (64, 128), [(10.0, 50.0)], [(40.0, 50.0)], 8)
    assert wide.shape == (16, 32) and wide[12, 6] == 0 and wide[0, 6] == 1


def test_keep_l1_is_the_official_masked_l1_and_lets_gradients_through():
    torch.manual_seed(0)
    feat = torch.randn(4, 8, 8, requires_grad=True)
    feat0 = torch.randn(4, 8, 8)
    mask = (torch.rand(8, 8) > 0.5).to(torch.float32)
    got = keep_l1(feat, feat0, mask)
    torch.testing.assert_close(got, F.l1_loss(feat * mask, feat0 * mask))
    (grad,) = torch.autograd.grad(got, [feat])
    assert grad[:, mask == 0].abs().sum() == 0 and grad[:, mask == 1].abs().min() > 0


def test_the_term_reads_the_32_px_block_and_belongs_to_freedrag_local_only():
    G = load_generator(str(BUNDLED))
    assert coarse_block(G.synthesis, 5) == 3 and G.synthesis.feature_shapes()[3][1] == COARSE_SIZE
    assert coarse_block(G.synthesis, 2) == 2, "never past the feature block"
    G3 = generator_from_persistent(read_network_pickle(fixture_path("stylegan3-t-tiny-64.pkl"))["G_ema"])
    k = coarse_block(G3.synthesis, len(G3.synthesis.feature_shapes()) - 1)
    size = G3.synthesis.feature_shapes()[k][1] - 2 * G3.synthesis.feature_margins()[k]
    assert size <= COARSE_SIZE
    assert [name for name, m in methods.METHODS.items() if m.keep_lambda] == ["freedrag-local"]


def _outside_change(tracker: str, steps: int, mask: np.ndarray | None = None) -> tuple[float, DragSession, list]:
    G = load_generator(str(BUNDLED))
    s = DragSession(G, seed=0, config=DragConfig(lr=4e-3, tracker=tracker))
    s.set_points(HANDLES, TARGETS)
    if mask is not None:
        s.set_mask(mask)
    start = s.ws
    results = [s.step() for _ in range(steps)]
    kept = keep_mask((32, 32), (128, 128), HANDLES, TARGETS, KEEP_RADIUS * 128)
    with torch.no_grad():
        before = G.synthesis(start, until_block=3, noise_mode="const")[-1][0]
        after = G.synthesis(s.ws, until_block=3, noise_mode="const")[-1][0]
    return float(((after - before).abs() * kept).mean() / kept.mean()), s, results


def test_freedrag_local_keeps_the_image_away_from_the_drag_stiller_than_freedrag_ms():
    plain, _, plain_results = _outside_change("freedrag-ms", 25)
    local, s, results = _outside_change("freedrag-local", 25)
    assert all(r.loss_keep == 0 for r in plain_results)
    assert results[0].loss_keep == 0 and all(r.loss_keep > 0 for r in results[2:]), "F0 is the first step's"
    assert local < 0.75 * plain, (local, plain)
    assert s.handles != HANDLES, "the handle still moves"


def test_a_painted_mask_replaces_the_automatic_one():
    fixed = np.zeros((128, 128), np.float32)
    fixed[:, 100:] = 1
    _, s, results = _outside_change("freedrag-local", 4, mask=fixed)
    assert all(r.loss_keep == 0 for r in results) and s._drag.keep0 is None
    assert any(r.loss_mask > 0 for r in results[1:])


def test_a_freedrag_local_drag_continues_from_a_snapshot_bit_for_bit():
    G = load_generator(str(BUNDLED))
    cfg = DragConfig(lr=4e-3, tracker="freedrag-local")

    def fresh() -> DragSession:
        s = DragSession(G, seed=0, config=cfg)
        s.set_points(HANDLES, TARGETS)
        return s

    ref = fresh()
    expected = [ref.step() for _ in range(6)]
    a = fresh()
    first = [a.step() for _ in range(3)]
    b = DragSession.from_snapshot(G, pickle.loads(pickle.dumps(a.snapshot())))
    rest = [b.step() for _ in range(3)]
    assert [(r.handles, r.loss, r.loss_keep) for r in first + rest] == \
        [(r.handles, r.loss, r.loss_keep) for r in expected]
    assert torch.equal(b.ws, ref.ws)


def test_windowed_and_whole_map_freedrag_local_drags_agree():
    """Equal in exact arithmetic, so compared where rounding cannot grow (`_numerics`): handles, losses (the
    keep term's too) and the first step's gradient, not the latents after Adam's steps."""
    G = load_generator(str(BUNDLED))
    runs = {}
    for windowed in (True, False):
        s = DragSession(G, seed=0, config=DragConfig(lr=4e-3, tracker="freedrag-local", windowed=windowed))
        s.set_points(HANDLES, TARGETS)
        first = s.step()
        gradient = first_gradient(s)
        runs[windowed] = ([first] + [s.step() for _ in range(4)], gradient)
    assert_same_drag(runs[True][0], runs[False][0], runs[True][1], runs[False][1], losses=("loss", "loss_keep"))
    assert runs[True][0][-1].loss_keep > 0, "the keep term must be active"


def test_a_freedrag_local_drag_on_the_bundled_model_arrives():
    G = load_generator(str(BUNDLED))
    s = DragSession(G, seed=0, config=DragConfig(lr=4e-3, tracker="freedrag-local"))
    s.set_points([(50, 50)], [(56, 46)])
    results = list(s.run(max_steps=200, render_every=0))
    assert results[-1].end == "arrived" and results[-1].distances[0] <= 2
    assert results[-1].loss_keep == 0 and results[-2].loss_keep > 0, "no step (and no term) once arrived"


def test_a_stylegan3_drag_holds_the_margin_free_coarse_layer():
    G = generator_from_persistent(read_network_pickle(fixture_path("stylegan3-t-tiny-64.pkl"))["G_ema"])
    s = DragSession(G, seed=0, config=DragConfig(lr=2e-3, tracker="freedrag-local"))
    s.set_points([(20, 30)], [(30, 30)])
    results = [s.step() for _ in range(3)]
    k = coarse_block(G.synthesis, s.feature_block)
    channels, size, _ = G.synthesis.feature_shapes()[k]
    inner = size - 2 * G.synthesis.feature_margins()[k]
    assert tuple(s._drag.keep0.shape) == (channels, inner, inner) and s._drag.keep_mask.shape == (inner, inner)
    assert results[0].loss_keep == 0 and results[2].loss_keep > 0
