"""FreeDrag's feature dragging: motion supervision towards an adaptive template at a line-searched point.

FreeDrag (Ling et al., "FreeDrag: Feature Dragging for Reliable Point-based Image Editing", CVPR 2024;
semantics read from LPengYang/FreeDrag `functions.py`, our own code) replaces both halves of DragGAN's step:
there is no nearest-neighbour point tracking, and motion supervision pulls the features at a chosen next
point p (the handle's position, known by construction) towards a template T of the handle's features,
instead of pushing the handle's features one pixel on. The drag is a sequence of sub-motions:

Per handle with target t, positions fractional (row, col) image pixels, patch offsets O = {−s, 0, s}²
(s = max(1, r2 // 4) px: 1 at 128, 3 at 512 like FreeDrag's 3-px patch), F(q) the upsampled feature map
read bilinearly (`UpsampledView.grid_sample`) at the 9 points q + O, and ℓ(q) = mean |F(q) − T| over
those 9 × C values:

- Start: p = p0 (the handle), T = F0(p0), d = r2 − 1 px (the bounded move, ≥ 1; keeps every read inside
  the session's step window), and the expected loss L = ratio × the mean of ℓ₀(p0 ± d·e) over the four
  axis shifts on F0 (FreeDrag's L is a per-model constant; ours is relative, so it is scale-free across
  models and feature blocks). threshold_l = L/2.
- A sub-motion begins (the first step, or after the last one ended) on the current map F: ℓ_end = ℓ(p)
  (0 at the first step). A handle has arrived when |t − p| < 1 px and ℓ_end ≤ threshold_l / 2. The
  template adapts: T ← w·F(p) + (1 − w)·T with w = 1 for an arrived handle, else
  w = 1 / (1 + exp(a·(ℓ_end − b))), a = ln 9 / (0.6 L), b = 0.2 L (trusted matches teach the template,
  poor ones barely). Then each handle not arrived chooses its next point along the handle → target line,
  with e = (t − p)/|t − p| and m = min(d, |t − p|):
    * move on, when ℓ_end < threshold_l: the candidates p + (i/10)·m·e, i = 1…10, and p becomes the one
      whose ℓ (against the adapted T) is closest to L, so each sub-motion starts from the expected loss;
    * stay, when ℓ_end < ℓ_ini (this sub-motion's first loss): the last sub-motion is still converging;
    * backtrack, otherwise: from p' = p − m·e the candidates p' + (i/10)·min(2d, |t − p'|)·e' (e' = the
      unit vector from p' to t), and p becomes the best match (least ℓ).
- Every step's motion-supervision loss is Σ over handles of ℓ(p) with gradients through F (T fixed), the
  first step's per-handle values being ℓ_ini. A sub-motion ends after 5 steps, or after a step whose
  largest loss is below threshold_l / 2.
- The drag has arrived when every handle has (`settled`), which replaces the session's distance test.

The handle the session shows and measures is round(p). Step size: `lr_scale` (4) × DragConfig.lr: a
sub-motion waits for the content to match before it moves on, so the step size sets its speed (at the official
step size most drags used all 200 steps). Ratio 0.3 and the 4× step were chosen together on development pairs
(docs/experiments.md).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .base import DragGeometry

SUBSTEPS = 5       # FreeDrag's per-sub-motion iteration cap
CANDIDATES = 10    # FreeDrag's points per line search


class FreeDrag:
    """FreeDrag's per-drag state for N handles: next points, templates, sub-motion bookkeeping (see module
    docstring)."""

    name = "freedrag-ms"
    label = "FreeDrag (template supervision + line search)"
    help = ("FreeDrag: pulls each handle's template along its line at 4× the step size; it ends closest and "
            "loses the fewest points on trained models, but moves the rest of the image more.")
    lr_scale = 4.0         # this method's Adam step size, in units of DragConfig.lr (module docstring)
    keep_lambda = 0.0
    replaces: tuple[str, ...] = ()

    def __init__(self, geometry: DragGeometry, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0), ratio: float = 0.3, max_move: float | None = None) -> None:
        """feat0: the first step's block map (or window at origin); handles_rc: [N, 2] int64 start handles;
        `geometry.r2_px`, the official search radius, sets d and the patch spacing (ref is not used)."""
        radius = geometry.r2_px
        assert handles_rc.ndim == 2 and handles_rc.shape[1] == 2 and radius >= 1
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio}")
        self.view = geometry.view
        self.max_move = float(max(radius - 1, 1) if max_move is None else max_move)
        if not self.max_move > 0:
            raise ValueError(f"max_move must be > 0, got {self.max_move}")
        step = max(1, int(radius) // 4)
        grid = torch.arange(-1, 2, dtype=torch.float64) * step
        self.offsets = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), dim=-1).reshape(-1, 2)  # [P, 2]
        self.pos = handles_rc.detach().cpu().to(torch.float64).clone()                              # [N, 2]
        with torch.no_grad():
            self.template = self._patch(feat0, self.pos, origin).detach().clone()                   # [N, P, C]
            axes = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
            shifted = self.pos[:, None, :] + self.max_move * axes[None]                              # [N, 4, 2]
            shifted = self._clamp(shifted)
            n = self.pos.shape[0]
            costs = self._cost(self._patch(feat0, shifted.reshape(-1, 2), origin).reshape(n, 4, *self.template.shape[1:]))
        self.expected = (ratio * costs.mean(dim=1)).clamp_min(1e-12)                                 # L [N]
        self.loss_ini = torch.zeros(n, dtype=torch.float64)
        self.loss_end = torch.zeros(n, dtype=torch.float64)
        self.at_target = torch.zeros(n, dtype=torch.bool)
        self.substep = 0           # steps taken in the current sub-motion
        self.started = False       # whether the first sub-motion began
        self.settled = False       # every handle arrived: the drag is done

    # ------------------------------------------------------------------ snapshot

    def state(self) -> dict[str, np.ndarray]:
        """Next points, templates, L, the sub-motion's losses and counters."""
        return {"pos": self.pos.numpy().copy(), "template": self.template.detach().cpu().numpy().copy(),
                "expected": self.expected.numpy().copy(), "loss_ini": self.loss_ini.numpy().copy(),
                "loss_end": self.loss_end.numpy().copy(), "arrived": self.at_target.numpy().copy(),
                "counters": np.array([self.substep, int(self.started), int(self.settled)], dtype=np.int64)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pos = torch.as_tensor(state["pos"]).clone()
        self.template = torch.as_tensor(state["template"]).to(self.template.device).clone()
        self.expected = torch.as_tensor(state["expected"]).clone()
        self.loss_ini = torch.as_tensor(state["loss_ini"]).clone()
        self.loss_end = torch.as_tensor(state["loss_end"]).clone()
        self.at_target = torch.as_tensor(state["arrived"]).clone()
        substep, started, settled = (int(v) for v in state["counters"])
        self.substep, self.started, self.settled = substep, bool(started), bool(settled)

    # ------------------------------------------------------------------ reads

    def _clamp(self, points: torch.Tensor) -> torch.Tensor:
        height, width = self.view.image_hw
        return torch.stack([points[..., 0].clamp(0, height - 1), points[..., 1].clamp(0, width - 1)], dim=-1)

    def _patch(self, feat: torch.Tensor, points: torch.Tensor, origin: tuple[int, int]) -> torch.Tensor:
        """Bilinear reads of the 9-point patch around each of points [M, 2] (row, col) → [M, P, C]."""
        at = self._clamp(points[:, None, :] + self.offsets[None])                                  # [M, P, 2]
        device = feat.device
        ys = at[..., 0].to(torch.float32).to(device)
        xs = at[..., 1].to(torch.float32).to(device)
        return self.view.grid_sample(feat, ys, xs, origin).permute(1, 2, 0)

    def _cost(self, patches: torch.Tensor) -> torch.Tensor:
        """ℓ: mean |patch − T| per handle, for patches [N, ..., P, C] → [N, ...] float64 on the CPU."""
        template = self.template.reshape(self.template.shape[0], *([1] * (patches.ndim - 3)), *self.template.shape[1:])
        return (patches - template).abs().mean(dim=(-2, -1)).detach().cpu().to(torch.float64)

    # ------------------------------------------------------------------ the step

    def track(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
              origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The handles round(p) [N, 2] int64 (on handles_rc's device); begins a sub-motion when one is due.

        feat: [C, h, w] current block map (or a window at origin); handles_rc: ignored (p is the state);
        targets_rc: [N, 2] float (row, col)."""
        if self.substep == 0:
            with torch.no_grad():
                self._begin_submotion(feat.detach(), targets_rc.cpu().to(torch.float64), origin)
        return torch.round(self.pos).to(torch.int64).to(handles_rc.device)

    def _begin_submotion(self, feat: torch.Tensor, targets: torch.Tensor, origin: tuple[int, int]) -> None:
        expected = self.expected
        limit = 0.5 * expected
        if self.started:
            current = self._patch(feat, self.pos, origin)
            self.loss_end = self._cost(current[:, None])[:, 0]
            remain = torch.linalg.norm(targets - self.pos, dim=1)
            self.at_target = (remain < 1) & (self.loss_end <= 0.5 * limit)
            a = math.log(9.0) / (0.6 * expected)
            weight = torch.where(self.at_target, torch.ones_like(expected),
                                 1 / (1 + torch.exp(a * (self.loss_end - 0.2 * expected))))
            weight = weight.to(self.template.dtype).to(self.template.device)[:, None, None]
            self.template = weight * current + (1 - weight) * self.template
        self.started = True
        self.settled = bool(self.at_target.all())
        if self.settled:
            return
        steps = torch.arange(1, CANDIDATES + 1, dtype=torch.float64) / CANDIDATES                  # [K]
        for k in range(self.pos.shape[0]):
            if bool(self.at_target[k]):
                continue
            p, t = self.pos[k], targets[k]
            remain = float(torch.linalg.norm(t - p))
            if remain == 0:
                continue
            toward = (t - p) / remain
            if self.loss_end[k] < limit[k]:
                line = p + steps[:, None] * min(self.max_move, remain) * toward
                pick = lambda cost: int(torch.argmin((cost - expected[k]).abs()))  # noqa: E731
            elif self.loss_end[k] < self.loss_ini[k]:
                continue
            else:
                back = p - min(self.max_move, remain) * toward
                back_remain = float(torch.linalg.norm(t - back))
                line = back + steps[:, None] * min(2 * self.max_move, back_remain) * (t - back) / back_remain
                pick = lambda cost: int(torch.argmin(cost))  # noqa: E731
            line = self._clamp(line)
            cost = self._cost_one(feat, line, k, origin)
            self.pos[k] = line[pick(cost)]

    def _cost_one(self, feat: torch.Tensor, line: torch.Tensor, k: int, origin: tuple[int, int]) -> torch.Tensor:
        """ℓ against handle k's template at each of line's points [K, 2] → [K]."""
        patches = self._patch(feat, line, origin)                                                   # [K, P, C]
        return (patches - self.template[k][None]).abs().mean(dim=(-2, -1)).cpu().to(torch.float64)

    def arrived(self, distances: Sequence[float]) -> bool:
        """Every handle arrived by FreeDrag's own test (the distances are not read)."""
        return self.settled

    def motion_loss(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                    origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """This step's motion-supervision loss Σ_k ℓ_k(p_k) (differentiable in feat), and the sub-motion's
        bookkeeping: ℓ_ini at its first step; it ends after SUBSTEPS steps or a step below threshold_l / 2."""
        losses = (self._patch(feat, self.pos, origin) - self.template.detach()).abs().mean(dim=(-2, -1))  # [N]
        values = losses.detach().cpu().to(torch.float64)
        if self.substep == 0:
            self.loss_ini = values
        self.substep += 1
        if self.substep >= SUBSTEPS or bool((values < 0.25 * self.expected).all()):
            self.substep = 0
        return losses.sum()
