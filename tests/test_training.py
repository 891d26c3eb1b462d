"""Renderer-supervised trainer: a 2-step smoke run on a tiny config, resume, export through load_generator."""

from __future__ import annotations

import json

import pytest
import torch

from draggan.checkpoints import load_generator
from draggan.data import procedural
from draggan.training.train import (CHECKPOINT_FILE, TrainConfig, Trainer, feature_weight_map,
                                    reconstruction_loss, train)


def _tiny(run_dir) -> TrainConfig:
    return TrainConfig(run_dir=str(run_dir), resolution=16, w_dim=16, mapping_layers=2, channel_base=64,
                       channel_max=16, batch=2, total_kimg=0.004, log_seconds=0.0)


def test_two_steps_checkpoint_resume_and_export(tmp_path):
    cfg = _tiny(tmp_path / "run")
    trainer = train(cfg, export_dir=str(tmp_path / "model"))
    assert trainer.step == 2 and trainer.images_seen == 4
    assert (tmp_path / "run" / CHECKPOINT_FILE).is_file()
    assert (tmp_path / "run" / "samples" / "latest.png").is_file()
    assert trainer.G.mapping.w_avg.abs().sum() > 0, "w_avg is tracked during training"
    torch.testing.assert_close(trainer.G_ema.mapping.w_avg, trainer.G.mapping.w_avg)

    resumed = Trainer(TrainConfig(**{**cfg.__dict__, "total_kimg": 0.006}))
    assert resumed.step == 2
    for p, q in zip(resumed.G.parameters(), trainer.G.parameters()):
        assert torch.equal(p, q)
    loss = resumed.train_step()
    assert resumed.step == 3 and torch.isfinite(torch.tensor(loss))

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == 1 and config["family"] == "stylegan2"
    G = load_generator(tmp_path / "model", device="cpu")
    assert (G.z_dim, G.img_resolution, G.num_ws) == (procedural.NUM_PARAMS, 16, trainer.G.num_ws)
    z = procedural.sample_z(1, seed=0)
    img = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const")
    expected = trainer.G_ema.synthesis(trainer.G_ema.mapping(z, None, truncation_psi=0.7), noise_mode="const")
    torch.testing.assert_close(img, expected)


def test_resume_rejects_a_different_architecture(tmp_path):
    cfg = _tiny(tmp_path / "run")
    Trainer(cfg).save_checkpoint()
    try:
        Trainer(TrainConfig(**{**cfg.__dict__, "w_dim": 32}))
    except ValueError as e:
        assert "w_dim" in str(e)
    else:
        raise AssertionError("resuming with another architecture must fail")


def test_loss_and_feature_weights():
    _, img, kp = procedural.render_seeds(0, 2, resolution=32)
    weight = feature_weight_map(kp, 32, strength=4.0)
    assert weight.shape == (2, 1, 32, 32) and weight.min() >= 1 and weight.max() <= 5
    eye = kp[0, procedural.KEYPOINT_NAMES.index("left_eye")].round().long()
    assert weight[0, 0, eye[1], eye[0]] > 4.0
    assert weight[0, 0, 0, 0] < 1.01
    assert reconstruction_loss(img, img, weight, grad_weight=1.0) == 0
    blurred = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    sharp_only = reconstruction_loss(blurred, img, weight, grad_weight=0.0)
    assert reconstruction_loss(blurred, img, weight, grad_weight=1.0) > sharp_only > 0


def test_keypoint_regressor_trains_saves_and_loads(tmp_path):
    from draggan.training.keypoints import KeypointTrainConfig, load_regressor, train_regressor

    cfg = KeypointTrainConfig(run_dir=str(tmp_path / "kp"), resolution=32, channels=4, batch=2, total_kimg=0.004,
                              log_seconds=0.0)
    net = train_regressor(cfg, export_dir=str(tmp_path / "kp-model"))
    config = json.loads((tmp_path / "kp-model" / "config.json").read_text())
    assert config["kind"] == "keypoint-regressor" and config["keypoints"] == list(procedural.KEYPOINT_NAMES)
    loaded = load_regressor(tmp_path / "kp-model")
    _, img, _ = procedural.render_seeds(3, 2, resolution=32)
    with torch.no_grad():
        pts = net(img)
        torch.testing.assert_close(loaded(img), pts)
        assert pts.shape == (2, procedural.NUM_KEYPOINTS, 2)
        assert (pts >= -0.5).all() and (pts <= 31.5).all(), "soft-argmax stays inside the image"
        big = loaded(torch.nn.functional.interpolate(img, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(big, pts * 2 + 0.5, atol=0.35, rtol=0), "keypoints are in the input's pixels"


def test_new_run_continues_from_an_exported_generator(tmp_path):
    first = train(_tiny(tmp_path / "a"), export_dir=str(tmp_path / "model"))
    cfg = TrainConfig(**{**_tiny(tmp_path / "b").__dict__, "init_from": str(tmp_path / "model")})
    second = Trainer(cfg)
    kimg = json.loads((tmp_path / "model" / "config.json").read_text())["kimg"]
    assert kimg == round(first.images_seen / 1000, 1) and second.images_seen == int(kimg * 1000)
    for p, q in zip(second.G.parameters(), first.G_ema.parameters()):
        assert torch.equal(p, q)
    bad = TrainConfig(**{**cfg.__dict__, "run_dir": str(tmp_path / "c"), "w_dim": 32})
    try:
        Trainer(bad)
    except ValueError as e:
        assert "architecture" in str(e)
    else:
        raise AssertionError("continuing from another architecture must fail")


def test_a_run_at_twice_the_resolution_grows_an_exported_generator(tmp_path):
    from draggan.networks.ops import upsample2d
    from draggan.training.train import grow_state

    small = train(_tiny(tmp_path / "a"), export_dir=str(tmp_path / "model")).G_ema
    assert small.synthesis.b16.torgb.weight.abs().sum() > 0, "the small model's own top ToRGB draws"
    cfg = TrainConfig(**{**_tiny(tmp_path / "b").__dict__, "resolution": 32, "init_from": str(tmp_path / "model"),
                         "train_top_blocks": 1})
    grown = Trainer(cfg)
    assert grown.images_seen == 0 and grown.G.img_resolution == 32
    z = procedural.sample_z(2, seed=4)
    with torch.no_grad():
        expected = upsample2d(small(z, None, noise_mode="const"), small.synthesis.b16.resample_filter)
        torch.testing.assert_close(grown.G(z, None, noise_mode="const"), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(grown.G_ema(z, None, noise_mode="const"), expected, atol=1e-5, rtol=0)

    before = {name: p.detach().clone() for name, p in grown.G.named_parameters()}
    grown.train_step()
    changed = {name for name, p in grown.G.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("synthesis.b32.") for name in changed), sorted(changed)
    assert "synthesis.b32.torgb.weight" in changed, "the zero ToRGB must still learn"

    grown.save_checkpoint()
    with pytest.raises(ValueError, match="train_top_blocks"):
        Trainer(TrainConfig(**{**cfg.__dict__, "train_top_blocks": 0}))     # resumed with other trained blocks
    with pytest.raises(ValueError, match="architecture"):
        Trainer(TrainConfig(**{**cfg.__dict__, "run_dir": str(tmp_path / "c"), "resolution": 64}))
    with pytest.raises(ValueError, match="grow"):
        Trainer(TrainConfig(**{**cfg.__dict__, "run_dir": str(tmp_path / "d"), "w_dim": 32}))
    with pytest.raises(ValueError, match="twice"):
        grow_state(grown.G, small)
