"""The masked L1 on the block map (integer scale factors; phases and cells) equals `F.interpolate` + `F.l1_loss`.

Value and gradient against the official formula, for even and odd block maps, equal and unequal factors
(factor 1 too: the bundled 128-px models read a feature block of the image's size),
binary and non-binary masks, masks at every border, feature windows with an origin, several channel
chunks, exact zeros of the difference (sign(0) = 0), smooth and rough differences, the cell form forced,
the phase form forced, and the no-grad path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from draggan.engine.features import UpsampledView, masked_l1
from draggan.engine import phase_l1
from draggan.engine.phase_l1 import phase_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def _official(feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    size = list(mask.shape)
    return F.l1_loss(F.interpolate(feat[None], size, mode="bilinear") * mask,
                     F.interpolate(feat0[None], size, mode="bilinear") * mask)


def _masks(image_hw: tuple[int, int], seed: int) -> dict[str, torch.Tensor]:
    height, width = image_hw
    gen = torch.Generator().manual_seed(seed)
    inner = torch.zeros(image_hw)
    inner[height // 4 + 1:3 * height // 4, width // 3:width - 2] = 1
    corner = torch.zeros(image_hw)
    corner[:height // 2 + 1, :width // 2 + 3] = 1
    far_corner = torch.zeros(image_hw)
    far_corner[height // 2 - 1:, width // 3:] = 1
    weights = torch.rand(image_hw, generator=gen) * (torch.rand(image_hw, generator=gen) > 0.3)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    painted = (torch.hypot(yy - height / 2, xx - width / 2) > min(image_hw) / 4).float()  # fixed = all but a disk
    pixel = torch.zeros(image_hw)
    pixel[height - 1, 1] = 1
    return dict(inner=inner, corner=corner, far_corner=far_corner, weights=weights, painted=painted, pixel=pixel)


def _smooth(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A difference that varies slowly (most cells of one sign, as on drags), with sign changes."""
    coarse = torch.randn(shape[0], 1, 2, 2, generator=gen) + 0.3
    return F.interpolate(coarse, list(shape[1:]), mode="bilinear", align_corners=True)[:, 0]


# cells: the cell form wherever a chunk has any unmixed cell (MIXED_MAX 1), never (−1), or as shipped.
@pytest.mark.parametrize("mixed_max", [1.0, -1.0, None])
@pytest.mark.parametrize("smooth", [True, False])
@pytest.mark.parametrize("feat_hw,scale", [((6, 8), (4, 4)), ((7, 5), (2, 3)), ((5, 7), (3, 2)), ((9, 4), (1, 2)),
                                           ((9, 6), (1, 1)), ((5, 5), (3, 3))])
def test_phase_l1_equals_interpolate_for_every_mask_and_window(feat_hw, scale, smooth, mixed_max, monkeypatch):
    if mixed_max is not None:
        monkeypatch.setattr(phase_l1, "MIXED_MAX", mixed_max)
    image_hw = (feat_hw[0] * scale[0], feat_hw[1] * scale[1])
    view = UpsampledView.create(feat_hw, image_hw)
    gen = torch.Generator().manual_seed(sum(feat_hw))
    feat0 = torch.randn(5, *feat_hw, generator=gen)
    base = feat0 + (_smooth((5, *feat_hw), gen) if smooth else 0.5 * torch.randn(5, *feat_hw, generator=gen))
    base[1] = feat0[1]                                   # a channel with no difference: sign(0) = 0
    base[3, :, :2] = feat0[3, :, :2]
    for name, mask in _masks(image_hw, seed=feat_hw[0]).items():
        feat = base.clone().requires_grad_(True)
        expected = _official(feat, feat0, mask)
        (g_expected,) = torch.autograd.grad(expected, [feat])
        active = mask != 0
        rows = torch.nonzero(active.any(dim=1)).flatten()
        cols = torch.nonzero(active.any(dim=0)).flatten()
        r0, r1 = view.block_rows(int(rows[0]), int(rows[-1]))
        c0, c1 = view.block_cols(int(cols[0]), int(cols[-1]))
        for window, chunk in (((0, feat_hw[0], 0, feat_hw[1]), None), ((r0, r1, c0, c1), 1)):
            a, b, c, d = window
            got = masked_l1(view, feat[:, a:b, c:d], feat0[:, a:b, c:d], mask, chunk_elems=chunk, origin=(a, c))
            (g_got,) = torch.autograd.grad(got, [feat])
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7, msg=f"{name} {window}")
            torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-7, msg=f"{name} {window}")
            with torch.no_grad():
                value = masked_l1(view, feat[:, a:b, c:d], feat0[:, a:b, c:d], mask, chunk_elems=chunk,
                                  origin=(a, c))
            torch.testing.assert_close(value, expected.detach(), rtol=1e-5, atol=1e-7, msg=f"{name} {window}")


@pytest.mark.parametrize("mixed_max", [1.0, -1.0])
def test_phase_l1_at_the_app_scale(mixed_max, monkeypatch):
    """128 → 512 (factor 4, the FFHQ-512 feature block) with a painted flexible area, in several chunks."""
    monkeypatch.setattr(phase_l1, "MIXED_MAX", mixed_max)
    feat_hw, image_hw = (128, 128), (512, 512)
    gen = torch.Generator().manual_seed(0)
    feat0 = torch.randn(3, *feat_hw, generator=gen)
    feat = (feat0 + _smooth((3, *feat_hw), gen) + 0.05 * torch.randn(3, *feat_hw, generator=gen)).requires_grad_(True)
    mask = _masks(image_hw, seed=0)["painted"]
    expected = _official(feat, feat0, mask)
    (g_expected,) = torch.autograd.grad(expected, [feat])
    got = masked_l1(UpsampledView.create(feat_hw, image_hw), feat, feat0, mask, chunk_elems=128 * 128)
    (g_got,) = torch.autograd.grad(got, [feat])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-9)


def test_phase_weights_are_the_interpolation_taps():
    """|λ_p| and the neighbour's side are F.interpolate's own weights: upsampling a one-hot block map."""
    for scale in (1, 2, 3, 4, 8):
        pulse = torch.zeros(1, 1, 1, 5)
        pulse[..., 2] = 1
        up = F.interpolate(pulse, size=[1, 5 * scale], mode="bilinear")[0, 0, 0]
        for p, (t, side) in enumerate(phase_weights(scale)):
            assert up[2 * scale + p].item() == pytest.approx(1 - t, abs=1e-6)
            neighbour = 2 * scale + p - side * scale  # the same phase of the block whose neighbour is the pulse
            assert up[neighbour].item() == pytest.approx(t, abs=1e-6)
        assert np.isclose(sum(1 - t for t, _ in phase_weights(scale)) + sum(t for t, _ in phase_weights(scale)),
                          scale)
