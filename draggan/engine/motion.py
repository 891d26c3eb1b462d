"""Motion supervision: pull the features around each handle one pixel towards its target.

Official DragGAN semantics, per handle p (integer, after tracking) with target t and d = t − p:
skip the handle when |d| ≤ 1; otherwise, over the pixels q with distance(q, p) < r1, add
L1-mean(F(q).detach(), F(q + d/|d|)) where F is the image-size upsampled feature map and F(q + d/|d|) is a
`grid_sample(align_corners=True)` read. The official code measures distance(q, p) on a
`torch.linspace(0, H, H)` × `torch.linspace(0, W, W)` grid (pixel i sits at i·H/(H − 1)), so we select
pixels on that same grid to supervise exactly the same set.

`plan_motion` does the tiny host-side bookkeeping (which pixels, which direction) for all handles at once;
`motion_loss` then needs two sparse gathers on the device and no Python loop over handles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .features import UpsampledView


@dataclass(frozen=True)
class MotionPlan:
    """The supervised pixels of all handles, flattened: P entries."""

    rows: torch.Tensor     # [P] int64, q's row
    cols: torch.Tensor     # [P] int64, q's column
    ys: torch.Tensor       # [P] float32, row of q + d/|d|
    xs: torch.Tensor       # [P] float32, column of q + d/|d|
    weights: torch.Tensor  # [P] float32, 1 / (number of pixels of q's handle)

    def to(self, device: torch.device | str) -> "MotionPlan":
        return MotionPlan(*(t.to(device, non_blocking=True) for t in (self.rows, self.cols, self.ys, self.xs,
                                                                       self.weights)))


def official_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates of the grid the official code measures motion-supervision radii on."""
    return torch.linspace(0, height, height), torch.linspace(0, width, width)


def plan_motion(handles_rc: torch.Tensor, targets_rc: torch.Tensor, radius: int,
                grid: tuple[torch.Tensor, torch.Tensor]) -> MotionPlan | None:
    """Pixels and shifted sample positions for every handle farther than 1 px from its target.

    handles_rc: [N, 2] int64 (row, col) on the CPU; targets_rc: [N, 2] float64 (row, col); radius: r1 in
    pixels; grid: `official_grid(H, W)`. Returns None when no handle needs supervision.
    """
    assert handles_rc.ndim == 2 and handles_rc.shape == targets_rc.shape and handles_rc.shape[1] == 2
    assert radius >= 1
    lin_rows, lin_cols = grid
    height, width = lin_rows.shape[0], lin_cols.shape[0]
    delta = (targets_rc.to(torch.float64) - handles_rc.to(torch.float64)).to(torch.float32)  # (dy, dx)
    norm = torch.linalg.norm(delta, dim=1)
    active = norm > 1
    if not bool(active.any()):
        return None
    unit = delta / (norm[:, None] + 1e-7)

    offsets = torch.arange(-radius - 2, radius + 3)
    rows = handles_rc[:, 0:1] + offsets                                       # [N, B]
    cols = handles_rc[:, 1:2] + offsets                                       # [N, B]
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    dr = (lin_rows[rows.clamp(0, height - 1)] - handles_rc[:, 0:1]) ** 2    # [N, B]
    dc = (lin_cols[cols.clamp(0, width - 1)] - handles_rc[:, 1:2]) ** 2     # [N, B]
    dist = (dr[:, :, None] + dc[:, None, :]) ** 0.5                           # [N, B, B]
    selected = (dist < radius) & row_ok[:, :, None] & col_ok[:, None, :] & active[:, None, None]
    handle, i, j = torch.nonzero(selected, as_tuple=True)
    q_rows = rows[handle, i]
    q_cols = cols[handle, j]
    counts = torch.bincount(handle, minlength=handles_rc.shape[0])
    return MotionPlan(rows=q_rows, cols=q_cols,
                      ys=q_rows.to(torch.float32) + unit[handle, 0],
                      xs=q_cols.to(torch.float32) + unit[handle, 1],
                      weights=1.0 / counts[handle].to(torch.float32))


def motion_loss(view: UpsampledView, feat: torch.Tensor, plan: MotionPlan,
                origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Σ over handles of L1-mean(F(q).detach(), F(q + d/|d|)) for the block map feat [C, h, w] (or a
    window of it at `origin`).

    The reads are gathered from the crop of feat they touch, so the gathers' backward builds crop-sized
    gradients, not one map-sized zero tensor per gather (16 of them at the whole 512 map's 4M values)."""
    assert feat.ndim == 3
    r0, r1, c0, c1 = _read_box(view, plan, origin, feat.shape[1:])
    feat = feat[:, r0:r1, c0:c1]
    origin = (origin[0] + r0, origin[1] + c0)
    fixed = view.pixels(feat.detach(), plan.rows, plan.cols, origin)          # [C, P]
    moved = view.grid_sample(feat, plan.ys, plan.xs, origin)                  # [C, P]
    return ((fixed - moved).abs().sum(dim=0) * plan.weights).sum() / feat.shape[0]


def _read_box(view: UpsampledView, plan: MotionPlan, origin: tuple[int, int],
              window_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rows [r0, r1) × columns [c0, c1) of the window (first block row/column `origin`) that the plan's
    reads touch: q itself and the integer pixels around q + d/|d|, clamped to the image."""
    height, width = view.image_hw
    y_lo = max(min(int(plan.rows.min()), int(torch.floor(plan.ys.min()))), 0)
    y_hi = min(max(int(plan.rows.max()), int(torch.floor(plan.ys.max())) + 1), height - 1)
    x_lo = max(min(int(plan.cols.min()), int(torch.floor(plan.xs.min()))), 0)
    x_hi = min(max(int(plan.cols.max()), int(torch.floor(plan.xs.max())) + 1), width - 1)
    box = (int(view.rows.idx0[y_lo]) - origin[0], int(view.rows.idx1[y_hi]) + 1 - origin[0],
           int(view.cols.idx0[x_lo]) - origin[1], int(view.cols.idx1[x_hi]) + 1 - origin[1])
    assert box[0] >= 0 and box[1] <= window_hw[0] and box[2] >= 0 and box[3] <= window_hw[1], \
        f"motion supervision reads {box} outside the step's window {tuple(window_hw)}"
    return box
