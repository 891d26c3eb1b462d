"""The bundled cartoon-face generators and keypoint judges: offline loading and the drag benchmark end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench.drag_quality import DEFAULT_GENERATOR, DEFAULT_JUDGE, PAPER_LR, default_lr, run_benchmark
from draggan.checkpoints import load_generator
from draggan.data import procedural
from draggan.training.keypoints import load_regressor

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
RESOLUTIONS = (128, 64)


def test_benchmark_defaults_to_the_128_pixel_models_and_the_zoos_step_size(tmp_path):
    assert DEFAULT_GENERATOR == CHECKPOINTS / "cartoon-faces-128"
    assert DEFAULT_JUDGE == CHECKPOINTS / "cartoon-faces-keypoints-128"
    assert default_lr(DEFAULT_GENERATOR) == default_lr("cartoon-faces-64") == 4e-3
    assert default_lr(tmp_path / "elsewhere") == PAPER_LR == 2e-3


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_bundled_generator_loads_offline_and_renders(resolution):
    G = load_generator(CHECKPOINTS / f"cartoon-faces-{resolution}", device="cpu")
    assert G.family == "stylegan2" and (G.img_height, G.img_width) == (resolution, resolution)
    assert G.z_dim == procedural.NUM_PARAMS and G.mapping.w_avg.abs().sum() > 0
    z = procedural.sample_z(2, seed=0)
    with torch.no_grad():
        img = G(z, None, truncation_psi=0.7, noise_mode="const")
    assert img.shape == (2, 3, resolution, resolution) and torch.isfinite(img).all()
    assert (img[0] - img[1]).abs().mean() > 0.02, "different latents give different faces"


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_bundled_generator_draws_the_renderers_face(resolution):
    """Renderer supervision worked: the generator's face for z is close to the rendered face for z."""
    G = load_generator(CHECKPOINTS / f"cartoon-faces-{resolution}", device="cpu")
    z = procedural.sample_z(8, seed=77)
    with torch.no_grad():
        fake = G(z, None, noise_mode="const")
        real, _ = procedural.render_z(z, resolution)
        other, _ = procedural.render_z(z.roll(1, dims=0), resolution)
    err, baseline = (fake - real).abs().mean(), (fake - other).abs().mean()
    assert err < 0.5 * baseline, f"L1 to own render {float(err):.3f} vs to another face's {float(baseline):.3f}"


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_bundled_judge_reads_rendered_faces(resolution):
    judge = load_regressor(CHECKPOINTS / f"cartoon-faces-keypoints-{resolution}")
    _, img, kp = procedural.render_seeds(4321, 16, resolution=resolution)
    with torch.no_grad():
        err = (judge(img) - kp).norm(dim=-1).mean()
    assert err < 0.015 * resolution, f"judge error {float(err):.2f} px on clean faces"


def test_drag_benchmark_runs_end_to_end_on_two_pairs():
    G = load_generator(DEFAULT_GENERATOR, device="cpu")
    judge = load_regressor(DEFAULT_JUDGE)
    rows = run_benchmark(G, judge, pairs=2, max_steps=3, spaces=["w", "w+"], point_sets=["5"])
    assert [(r["space"], r["points"], r["pairs"]) for r in rows] == [("w", "5", 2), ("w+", "5", 2)]
    for r in rows:
        assert r["md_before"] > 0 and math.isfinite(r["md_after"]) and 1 <= r["steps"] <= 3
        assert r["seconds_per_step"] > 0
