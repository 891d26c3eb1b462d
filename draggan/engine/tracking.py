"""Point tracking: move each handle to the best feature match inside a square search window.

Official DragGAN semantics: for a handle at integer pixel (row, col), search the window
[row − r, row + r] × [col − r, col + r] clipped to the image for the pixel whose upsampled feature is nearest
(L2) to the handle's reference feature; on ties the first pixel in row-major window order wins. All handles
are searched at once: one gather, one norm, one argmin.
"""

from __future__ import annotations

import torch

from .features import UpsampledView


def reference_features(view: UpsampledView, feat: torch.Tensor, points_rc: torch.Tensor,
                       origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsampled features at integer pixels points_rc [N, 2] (row, col) → [N, C] (no grad)."""
    assert points_rc.ndim == 2 and points_rc.shape[1] == 2
    with torch.no_grad():
        return view.pixels(feat.detach(), points_rc[:, 0], points_rc[:, 1], origin).t().contiguous()


def track_points(view: UpsampledView, feat: torch.Tensor, ref: torch.Tensor, points_rc: torch.Tensor,
                 radius: int, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """New integer (row, col) [N, 2] of every handle: nearest-feature pixel in its clipped window.

    feat: [C, h, w] current block map (or a window of it at `origin`); ref: [N, C] reference features;
    points_rc: [N, 2] int64 handles.
    """
    assert feat.ndim == 3 and ref.ndim == 2 and ref.shape == (points_rc.shape[0], feat.shape[0])
    assert radius >= 0
    height, width = view.image_hw
    with torch.no_grad():
        offsets = torch.arange(-radius, radius + 1, device=points_rc.device)
        rows = points_rc[:, 0:1] + offsets                                    # [N, K]
        cols = points_rc[:, 1:2] + offsets                                    # [N, K]
        size = offsets.shape[0]
        grid_rows = rows[:, :, None].expand(-1, size, size)
        grid_cols = cols[:, None, :].expand(-1, size, size)
        inside = (grid_rows >= 0) & (grid_rows < height) & (grid_cols >= 0) & (grid_cols < width)
        values = view.pixels(feat.detach(), grid_rows.clamp(0, height - 1), grid_cols.clamp(0, width - 1), origin)
        dist = torch.linalg.norm(values - ref.t()[:, :, None, None], dim=0)  # [N, K, K]
        dist = dist.masked_fill(~inside, float("inf")).flatten(1)
        best = dist.argmin(dim=1)
        return torch.stack([rows.gather(1, (best // size)[:, None])[:, 0],
                            cols.gather(1, (best % size)[:, None])[:, 0]], dim=1)
