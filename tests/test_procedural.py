"""Procedural cartoon faces: determinism, parameter map, and keypoints that sit on what was drawn."""

from __future__ import annotations

import torch

from draggan.data import procedural
from draggan.data.procedural import KEYPOINT_NAMES, NUM_PARAMS, PARAM_NAMES


def _neutral(n: int = 1, **overrides: float) -> torch.Tensor:
    """Mid-range parameters (centred, upright, open eyes looking ahead), with named overrides."""
    p = torch.full([n, NUM_PARAMS], 0.5)
    p[:, PARAM_NAMES.index("eye_open")] = 1.0
    p[:, PARAM_NAMES.index("mouth_open")] = 1.0
    for name, value in overrides.items():
        p[:, PARAM_NAMES.index(name)] = value
    return p


def _pixel(img: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    x, y = (int(v) for v in xy.round())
    return (img[:, y, x] + 1) / 2


def test_deterministic_in_seed_and_varied_across_seeds():
    z1, img1, kp1 = procedural.render_seeds(7, 6)
    z2, img2, kp2 = procedural.render_seeds(7, 6)
    assert torch.equal(z1, z2) and torch.equal(img1, img2) and torch.equal(kp1, kp2)
    _, img3, kp3 = procedural.render_seeds(8, 6)
    assert not torch.allclose(img1, img3)
    assert img1.shape == (6, 3, 64, 64) and img1.dtype == torch.float32
    assert img1.min() >= -1 and img1.max() <= 1
    assert kp1.shape == (6, len(KEYPOINT_NAMES), 2) and len(KEYPOINT_NAMES) >= 8
    # Faces in one batch differ from each other (no constant output).
    assert (img1[1:] - img1[:1]).abs().flatten(1).mean(1).min() > 0.02


def test_batch_rendering_matches_single_rendering():
    z = procedural.sample_z(5, seed=3)
    img, kp = procedural.render_z(z)
    img1, kp1 = procedural.render_z(z[2:3])
    torch.testing.assert_close(img[2:3], img1)
    torch.testing.assert_close(kp[2:3], kp1)


def test_params_from_z_matches_the_mapping_input_normalisation():
    z = procedural.sample_z(4, seed=1)
    p = procedural.params_from_z(z)
    assert p.shape == (4, NUM_PARAMS) and (p > 0).all() and (p < 1).all()
    torch.testing.assert_close(procedural.params_from_z(3 * z), p)
    assert torch.equal(procedural.params_from_z(torch.zeros(1, NUM_PARAMS)), torch.full([1, NUM_PARAMS], 0.5))


def test_keypoints_sit_on_the_drawn_features():
    params = _neutral()
    img, kp = procedural.render(params, resolution=128)
    img, kp = img[0], kp[0]
    k = {name: kp[i] for i, name in enumerate(KEYPOINT_NAMES)}
    skin = _pixel(img, (k["nose"] + k["left_eye"]) / 2 + torch.tensor([0.0, 6.0]))
    for eye in ("left_eye", "right_eye"):
        assert _pixel(img, k[eye]).max() < 0.15, "the eye keypoint must be on the dark pupil"
    nose = _pixel(img, k["nose"])
    assert (nose < skin).all() and (nose > 0.2).all(), "the nose is a darker skin blob"
    mouth = _pixel(img, (k["mouth_top"] + k["mouth_bottom"]) / 2)
    assert mouth[0] > 2 * mouth[1], "between the lips is the red mouth interior"
    for name in ("mouth_top", "mouth_bottom"):
        assert _pixel(img, k[name]).max() < 0.35, f"{name} lies on the dark lip line"
    centre = (k["mouth_left"] + k["mouth_right"]) / 2
    for name in ("mouth_left", "mouth_right"):
        inward = k[name] + (centre - k[name]) / (centre - k[name]).norm()
        assert _pixel(img, inward)[1] < 0.2, f"{name} is the end of the dark lips / red mouth"
        assert (_pixel(img, k[name]) < skin).all()
    assert k["head_top"][1] < k["left_eye"][1] < k["nose"][1] < k["mouth_top"][1] < k["mouth_bottom"][1] < k["chin"][1]
    assert k["left_ear"][0] < k["left_eye"][0] < k["nose"][0] < k["right_eye"][0] < k["right_ear"][0]
    bg = _pixel(img, torch.tensor([1.0, 1.0]))
    inside = _pixel(img, k["head_top"] + torch.tensor([0.0, 3.0]))
    outside = _pixel(img, k["head_top"] - torch.tensor([0.0, 12.0]))
    assert torch.allclose(outside, bg) and not torch.allclose(inside, bg)


def test_keypoints_follow_pose_and_expression():
    _, kp0 = procedural.render(_neutral())
    _, kp_roll = procedural.render(_neutral(roll=1.0))
    _, kp_move = procedural.render(_neutral(head_x=1.0))
    _, kp_wide = procedural.render(_neutral(mouth_width=1.0))
    _, kp_shut = procedural.render(_neutral(mouth_open=0.0))
    i = {name: j for j, name in enumerate(KEYPOINT_NAMES)}
    assert (kp_move[0, :, 0] - kp0[0, :, 0]).min() > 4, "moving the head moves every keypoint"
    left, right = kp_roll[0, i["left_eye"]], kp_roll[0, i["right_eye"]]
    assert right[1] > left[1] + 3, "a positive roll tilts the eye line clockwise in the image"
    width = lambda kp: kp[0, i["mouth_right"], 0] - kp[0, i["mouth_left"], 0]  # noqa: E731
    assert width(kp_wide) > width(kp0) + 3
    gap = lambda kp: kp[0, i["mouth_bottom"], 1] - kp[0, i["mouth_top"], 1]  # noqa: E731
    assert gap(kp_shut) < 0.5 < gap(kp0)


def test_closed_eyes_hide_the_pupil():
    img_open, kp = procedural.render(_neutral(eye_open=1.0), resolution=128)
    img_shut, _ = procedural.render(_neutral(eye_open=0.0), resolution=128)
    eye = kp[0, KEYPOINT_NAMES.index("left_eye")]
    below = eye + torch.tensor([0.0, 4.0])
    assert _pixel(img_open[0], below).max() < 0.7
    assert _pixel(img_shut[0], below).min() > 0.4, "under a closed eye is skin, not iris"


def test_resolution_scales_geometry():
    params = procedural.params_from_z(procedural.sample_z(3, seed=5))
    _, kp64 = procedural.render(params, resolution=64)
    img128, kp128 = procedural.render(params, resolution=128)
    assert img128.shape == (3, 3, 128, 128)
    torch.testing.assert_close(kp128, kp64 * 2, atol=1e-3, rtol=1e-4)
