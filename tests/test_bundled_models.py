"""The bundled cartoon-face generators and keypoint judges: offline loading and the drag benchmark end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import json

from bench import drag_quality
from bench.drag_quality import DEFAULT_GENERATOR, DEFAULT_JUDGE, PAPER_LR, default_lr, run_benchmark
from draggan.engine import DragConfig
from draggan.engine import methods
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
        assert r["seconds_per_step"] > 0 and r["tracker"] == "official"


def test_drag_benchmark_measures_tracking_drift_and_mirror_for_both_trackers():
    G = load_generator(DEFAULT_GENERATOR, device="cpu")
    judge = load_regressor(DEFAULT_JUDGE)
    rows = run_benchmark(G, judge, pairs=1, max_steps=4, spaces=["w+"], point_sets=["1"], seed=1000,
                         drag=DragConfig(lr=4e-3), trackers=["official", "freedrag-ms"], mirror=True, curve_every=2)
    assert [r["tracker"] for r in rows] == ["official", "freedrag-ms"]
    for r in rows:
        assert 0 <= r["track_fail"] <= 1 and r["track_error"] >= 0
        assert r["drift"] > 0, "a drag moves the face a little, the undragged keypoints with it"
        assert 0 < r["mirror_l1"] < 0.5 and math.isnan(r["mirror_lpips"]), "no LPIPS weights offline"
        assert r["arrived"] in (0.0, 1.0) and 1 <= r["steps"] <= 4


def test_drag_benchmark_cli_runs_workers_and_writes_json_plot_and_table(tmp_path, capsys):
    out, plot = tmp_path / "out.json", tmp_path / "curves.png"
    drag_quality.main(["--pairs", "1", "--max-steps", "3", "--spaces", "w", "--points", "5", "--tracker", "all",
                       "--jobs", "2", "--curve-every", "1", "--json", str(out), "--plot", str(plot), "--markdown"])
    table = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [(r["tracker"], r["space"], r["points"]) for r in saved["rows"]] == [(t, "w", "5") for t in methods.names()]
    assert len(saved["pairs"]) == len(methods.names()) and all(len(p["track_errors"]) == 5 for p in saved["pairs"])
    assert sorted(saved["curves"]) == sorted(f"{t} w 5" for t in methods.names())
    assert all(len(c) >= 2 for c in saved["curves"].values()), "judge distance at step 0 and later"
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    assert "| tracker | space |" in table and "after / before" in table and "| freedrag-ms | w | 5 | 1 |" in table
    drag_quality.main(["--from-json", str(out), "--markdown"])
    assert capsys.readouterr().out == table


def test_benchmark_flags_points_all_is_the_eleven_keypoint_set_and_tracker_all_is_every_tracker():
    import argparse
    parser = argparse.ArgumentParser()
    assert drag_quality._split("all", tuple(drag_quality.POINT_SETS), "--points", parser) == ["all"]
    assert drag_quality._split("1,5", tuple(drag_quality.POINT_SETS), "--points", parser) == ["1", "5"]
    assert drag_quality._split("all", methods.names(), "--tracker", parser, every="all") == list(methods.names())
    with pytest.raises(SystemExit):
        drag_quality._split("7", tuple(drag_quality.POINT_SETS), "--points", parser)
    assert len(drag_quality.POINT_SETS["all"]) == 11


def test_fidelity_bench_ranks_the_128_model_above_the_64_model_upsampled(capsys):
    from bench import fidelity

    z = procedural.sample_z(8, seed=11)
    small, large = (load_generator(CHECKPOINTS / f"cartoon-faces-{r}", device="cpu") for r in (64, 128))
    coarse, fine = fidelity.fidelity(small, z, 128), fidelity.fidelity(large, z, 128)
    assert 0 < fine["l1"] < coarse["l1"] and 0 < fine["edge_l1"] < coarse["edge_l1"], (fine, coarse)
    assert fidelity.upsample_to(small, torch.zeros(1, 3, 64, 64), 128).shape == (1, 3, 128, 128)
    with pytest.raises(ValueError):
        fidelity.fidelity(large, z, 64)
    fidelity.main(["--generator", f"{CHECKPOINTS / 'cartoon-faces-64'}", "--faces", "2", "--resolution", "128"])
    assert "| cartoon-faces-64 | 64 px |" in capsys.readouterr().out
