"""The bundled cartoon-face generator and keypoint judge: offline loading and the drag benchmark end to end."""

from __future__ import annotations

import math

import torch

from bench.drag_quality import DEFAULT_GENERATOR, DEFAULT_JUDGE, run_benchmark
from draggan.checkpoints import load_generator
from draggan.data import procedural
from draggan.training.keypoints import load_regressor


def test_bundled_generator_loads_offline_and_renders():
    G = load_generator(DEFAULT_GENERATOR, device="cpu")
    assert G.family == "stylegan2" and (G.img_height, G.img_width) == (64, 64)
    assert G.z_dim == procedural.NUM_PARAMS and G.mapping.w_avg.abs().sum() > 0
    z = procedural.sample_z(2, seed=0)
    with torch.no_grad():
        img = G(z, None, truncation_psi=0.7, noise_mode="const")
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()
    assert (img[0] - img[1]).abs().mean() > 0.02, "different latents give different faces"


def test_bundled_judge_reads_rendered_faces():
    judge = load_regressor(DEFAULT_JUDGE)
    _, img, kp = procedural.render_seeds(4321, 16)
    with torch.no_grad():
        err = (judge(img) - kp).norm(dim=-1).mean()
    assert err < 1.5, f"judge error {float(err):.2f} px on clean faces"


def test_drag_benchmark_runs_end_to_end_on_two_pairs():
    G = load_generator(DEFAULT_GENERATOR, device="cpu")
    judge = load_regressor(DEFAULT_JUDGE)
    rows = run_benchmark(G, judge, pairs=2, max_steps=3, spaces=["w", "w+"], point_sets=["5"])
    assert [(r["space"], r["points"], r["pairs"]) for r in rows] == [("w", "5", 2), ("w+", "5", 2)]
    for r in rows:
        assert r["md_before"] > 0 and math.isfinite(r["md_after"]) and 1 <= r["steps"] <= 3
        assert r["seconds_per_step"] > 0
