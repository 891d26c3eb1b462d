"""Sparse reads of a feature block as if it had been bilinearly upsampled to image size.

DragGAN reads its features from a block map (e.g. 128×128) upsampled to the image size with
`F.interpolate(mode='bilinear', align_corners=False)`, and samples that full-resolution map at integer
pixels (point tracking, reference features) and at fractional positions with
`F.grid_sample(align_corners=True)` (motion supervision). Both are linear in the low-resolution map, so we
gather exactly the few low-resolution taps each read needs and never build the C × H × W image-size map.

Upsampled value at integer pixel (y, x) = bilinear sample of the block map at source coordinates
((y + 0.5)·h/H − 0.5, (x + 0.5)·w/W − 0.5), clamped at 0 below and to the last row/column above —
PyTorch's exact rule for `align_corners=False`. A `grid_sample(align_corners=True)` read at a fractional
pixel is the bilinear blend of the four surrounding integer-pixel values, corners outside the image
counting as zero (`padding_mode='zeros'`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .phase_l1 import PHASE_ELEMS, phase_l1


@dataclass(frozen=True)
class AxisTaps:
    """For every output pixel along one axis: the two source indices and their bilinear weights."""

    idx0: torch.Tensor  # [out] int64
    idx1: torch.Tensor  # [out] int64
    w0: torch.Tensor    # [out] float32
    w1: torch.Tensor    # [out] float32

    @property
    def size(self) -> int:
        return int(self.idx0.shape[0])


def axis_taps(out_size: int, in_size: int, device: torch.device | str = "cpu") -> AxisTaps:
    """Bilinear taps of `F.interpolate(size=..., align_corners=False)` along one axis (in → out pixels)."""
    assert out_size >= 1 and in_size >= 1
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    lam0 = (np.float32(1) - lam1).astype(np.float32)
    return AxisTaps(idx0=torch.from_numpy(i0).to(device), idx1=torch.from_numpy(i1).to(device),
                    w0=torch.from_numpy(lam0).to(device), w1=torch.from_numpy(lam1).to(device))


@dataclass(frozen=True)
class UpsampledView:
    """A feature map [C, h, w] read as its bilinear upsampling to [C, H, W], without building the latter."""

    rows: AxisTaps
    cols: AxisTaps

    @staticmethod
    def create(feature_hw: tuple[int, int], image_hw: tuple[int, int],
               device: torch.device | str = "cpu") -> "UpsampledView":
        return UpsampledView(rows=axis_taps(image_hw[0], feature_hw[0], device),
                             cols=axis_taps(image_hw[1], feature_hw[1], device))

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size

    @property
    def feature_hw(self) -> tuple[int, int]:
        """(h, w) of the whole block map (its last row/column is the last tap)."""
        return int(self.rows.idx1[-1]) + 1, int(self.cols.idx1[-1]) + 1

    def pixels(self, feat: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
               origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Upsampled values at integer pixels ys/xs int64 [...] (in-image) → [C, ...].

        feat: [C, h, w] block map, or a window of it whose first row/column is `origin`; the window must
        hold every block pixel the reads touch.
        """
        assert feat.ndim == 3 and ys.shape == xs.shape
        w = feat.shape[2]
        flat = feat.reshape(feat.shape[0], -1)
        r0, r1 = (self.rows.idx0[ys] - origin[0]) * w, (self.rows.idx1[ys] - origin[0]) * w
        c0, c1 = self.cols.idx0[xs] - origin[1], self.cols.idx1[xs] - origin[1]
        top = flat[:, r0 + c0] * self.cols.w0[xs] + flat[:, r0 + c1] * self.cols.w1[xs]
        bottom = flat[:, r1 + c0] * self.cols.w0[xs] + flat[:, r1 + c1] * self.cols.w1[xs]
        return top * self.rows.w0[ys] + bottom * self.rows.w1[ys]

    def block_rows(self, y0: int, y1: int) -> tuple[int, int]:
        """Block rows [lo, hi) that reads of image rows y0..y1 (inclusive, in-image) touch."""
        return int(self.rows.idx0[y0]), int(self.rows.idx1[y1]) + 1

    def block_cols(self, x0: int, x1: int) -> tuple[int, int]:
        """Block columns [lo, hi) that reads of image columns x0..x1 (inclusive, in-image) touch."""
        return int(self.cols.idx0[x0]), int(self.cols.idx1[x1]) + 1

    def grid_sample(self, feat: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                    origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """`grid_sample(align_corners=True, padding_mode='zeros')` of the upsampled map at fractional
        pixels ys/xs float [...] (within one pixel of the image) → [C, ...]; feat/origin as in `pixels`."""
        assert ys.shape == xs.shape and ys.is_floating_point() and xs.is_floating_point()
        height, width = self.image_hw
        y0 = torch.floor(ys)
        x0 = torch.floor(xs)
        wy1 = ys - y0
        wx1 = xs - x0
        y0 = y0.to(torch.int64)
        x0 = x0.to(torch.int64)
        out = None
        for dy, wy in ((0, 1 - wy1), (1, wy1)):
            for dx, wx in ((0, 1 - wx1), (1, wx1)):
                yi = y0 + dy
                xi = x0 + dx
                inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
                value = self.pixels(feat, yi.clamp(0, height - 1), xi.clamp(0, width - 1), origin)
                term = value * (wy * wx * inside)
                out = term if out is None else out + term
        return out


class _MaskedUpsampledL1(torch.autograd.Function):
    """Σ |upsample(diff)| · mask over the masked image rows, computed and differentiated in row chunks.

    The forward keeps only the low-resolution `diff`; the backward recomputes each chunk and applies the
    adjoint of the separable bilinear upsampling (two index_adds), so peak memory is one chunk.
    """

    @staticmethod
    def forward(ctx, diff: torch.Tensor, mask_rows: torch.Tensor, row_ids: torch.Tensor, col_lo: int,
                col_hi: int, view: UpsampledView, chunk_rows: int, origin: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(diff, mask_rows, row_ids)
        ctx.args = (col_lo, col_hi, view, chunk_rows, origin)
        total = diff.new_zeros([], dtype=torch.float32)
        for start in range(0, row_ids.shape[0], chunk_rows):
            up = _upsample_chunk(diff, row_ids[start:start + chunk_rows], col_lo, col_hi, view, origin)
            total = total + (up.abs() * mask_rows[start:start + chunk_rows]).sum()
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        diff, mask_rows, row_ids = ctx.saved_tensors
        col_lo, col_hi, view, chunk_rows, origin = ctx.args
        grad = torch.zeros_like(diff)
        cols = slice(col_lo, col_hi)
        c0, c1 = view.cols.idx0[cols] - origin[1], view.cols.idx1[cols] - origin[1]
        cw0, cw1 = view.cols.w0[cols], view.cols.w1[cols]
        for start in range(0, row_ids.shape[0], chunk_rows):
            ids = row_ids[start:start + chunk_rows]
            up = _upsample_chunk(diff, ids, col_lo, col_hi, view, origin)
            g_up = up.sign() * mask_rows[start:start + chunk_rows] * grad_out
            g_rows = diff.new_zeros([diff.shape[0], ids.shape[0], diff.shape[2]])
            g_rows.index_add_(2, c0, g_up * cw0)
            g_rows.index_add_(2, c1, g_up * cw1)
            grad.index_add_(1, view.rows.idx0[ids] - origin[0], g_rows * view.rows.w0[ids][:, None])
            grad.index_add_(1, view.rows.idx1[ids] - origin[0], g_rows * view.rows.w1[ids][:, None])
        return grad, None, None, None, None, None, None, None


class _PhaseL1(torch.autograd.Function):
    """`_MaskedUpsampledL1` for integer scale factors, on the block map's phases (`phase_l1.py`).

    The gradient of the sum is linear in the upstream gradient, so the forward computes it with the value
    (one pass over the phases) and the backward only scales it.
    """

    @staticmethod
    def forward(ctx, feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor, rows: tuple[int, int],
                cols: tuple[int, int], scale: tuple[int, int], origin: tuple[int, int], chunk_elems: int
                ) -> torch.Tensor:
        total, grad = phase_l1(feat, feat0, mask, rows, cols, scale, origin, ctx.needs_input_grad[0], chunk_elems)
        ctx.save_for_backward(grad)
        return total.to(feat.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None, None


def _upsample_chunk(diff: torch.Tensor, row_ids: torch.Tensor, col_lo: int, col_hi: int,
                    view: UpsampledView, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Rows `row_ids`, columns [col_lo, col_hi) of the upsampled `diff` → [C, rows, cols]; `diff` is the block
    window whose first row/column is `origin`."""
    rows = diff[:, view.rows.idx0[row_ids] - origin[0]] * view.rows.w0[row_ids][:, None] \
        + diff[:, view.rows.idx1[row_ids] - origin[0]] * view.rows.w1[row_ids][:, None]
    cols = slice(col_lo, col_hi)
    up = rows[:, :, view.cols.idx0[cols] - origin[1]] * view.cols.w0[cols] \
        + rows[:, :, view.cols.idx1[cols] - origin[1]] * view.cols.w1[cols]
    return up


def masked_l1(view: UpsampledView, feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor,
              chunk_elems: int | None = None, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """`F.l1_loss(up(feat) · mask, up(feat0) · mask)` (mean over C × H × W) without building up(feat).

    Integer scale factors go through the block map (`phase_l1.py`: its phases or cells), others through row
    chunks of gathers; `chunk_elems` (default: each path's own) bounds the values one chunk holds (for the
    block-map path: per phase image).

    feat/feat0: [C, h, w] (feat0 constant), or the same window of both whose first row/column is `origin`
    and which holds every block pixel that reads of the mask's non-zero pixels touch (the term is zero
    elsewhere, so a step needs features only there); mask: [H, W] float, zero where the term does not apply.
    """
    channels = feat.shape[0]
    height, width = view.image_hw
    assert mask.shape == (height, width), (tuple(mask.shape), (height, width))
    assert feat.shape == feat0.shape
    active = mask != 0
    row_ids = torch.nonzero(active.any(dim=1)).flatten()
    col_ids = torch.nonzero(active.any(dim=0)).flatten()
    if row_ids.numel() == 0:
        return (feat * 0).sum()
    col_lo, col_hi = int(col_ids[0]), int(col_ids[-1]) + 1
    r0, c0 = origin
    (h, w), (height, width) = view.feature_hw, view.image_hw
    assert (r0 <= int(view.rows.idx0[row_ids[0]]) and int(view.rows.idx1[row_ids[-1]]) < r0 + feat.shape[1]
            and c0 <= int(view.cols.idx0[col_lo]) and int(view.cols.idx1[col_hi - 1]) < c0 + feat.shape[2]), \
        "the feature window does not hold the masked region"
    if height % h == 0 and width % w == 0:
        sy, sx = height // h, width // w
        y0, y1 = int(row_ids[0]) // sy, -(-(int(row_ids[-1]) + 1) // sy)
        x0, x1 = col_lo // sx, -(-col_hi // sx)
        region = mask[sy * y0:sy * y1, sx * x0:sx * x1]
        total = _PhaseL1.apply(feat, feat0.detach(), region, (y0, y1), (x0, x1), (sy, sx), origin,
                               chunk_elems or PHASE_ELEMS)
    else:
        mask_rows = mask[row_ids, col_lo:col_hi].abs()
        chunk_rows = max(1, (chunk_elems or 1 << 22) // (channels * (col_hi - col_lo)))
        total = _MaskedUpsampledL1.apply(feat - feat0.detach(), mask_rows, row_ids, col_lo, col_hi, view,
                                         chunk_rows, origin)
    return total / (channels * height * width)
