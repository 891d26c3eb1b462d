"""Centroid point tracking: DragGAN's nearest-feature search, read as the centre of the matching valley.

Why (diagnosed with per-step traces of 5-point W+ drags on development pairs of the bundled 128-px model,
bench/drag_quality.py, seeds 0–15): the tracked handles that end > 3 px from the judge's keypoint did not
jump to a distractor; they drifted *ahead* of the content, by 1–2 px after ~30 steps and 3–4 px by the end.
Motion supervision copies the handle's feature one step towards the target every step (‖F(q + d) − sg F(q)‖₁
on a disk of only r1 = 1 px at 128), so the block's features around a handle smear into a valley of
near-equal matches along the drag line while the image (the eye, the mouth corner) follows only part of
the way. The cost map at such a handle (pair 2→3, right eye, step 110) has its minimum at the tracked pixel
and a valley within 1.5–1.9× of it reaching 3 px back to the judge's keypoint. The official argmin lands at
the valley's leading end: the handle "arrives" while the content is still short of the target. FreeDrag's
bounded line search (`robust_tracking.py`) does not help with this (it also takes the best match ahead);
neither did a 3 px matching patch, hysteresis towards the previous handle, or a 2–3 px motion-supervision
radius (development pairs, README). The soft-argmin of the official costs is pulled back into the valley.

Semantics, per handle at integer pixel p (row, col) with reference feature R = F0(p0) (the official
tracker's) and the current upsampled feature map F (`UpsampledView.pixels`):

1. c(q) = ‖F(q) − R‖₂ for every q of the official window |q − p|∞ ≤ r2 clipped to the image, and its minimum
   m = c(q*) at q* = the official tracker's answer (first in row-major order on ties).
2. Weights w(q) = exp(−(c(q) − m) / (τ·m)) for every q of the window (or, when a valley radius ρ is
   given, only for q with |q − q*|∞ ≤ ρ; 0 elsewhere); τ (`temperature`, default 0.2) is relative to m,
   so the rule is scale-free across models and feature blocks: a pixel 20 % worse than the best weighs e⁻¹.
   When m = 0 (an exact match, e.g. the first step) only exact matches weigh.
3. The new handle is round(Σ w(q)·q / Σ w(q)) (torch.round: halves to even), always inside the window.

It keeps no state beyond the official reference, so snapshots carry nothing extra. τ = 0.2 and the whole
window (ρ = None) were picked on development seeds 0–15 (τ 0.1/0.2/0.3/0.5, ρ 1/2/3 tried: 5-point W+
tracking failures 12/5/10/10 % and 12/12/8 % vs official 12 %; within noise on seeds 100–115); the held-out
pairs (seed 1000) were run once, after.

Limitation: the whole-window centroid leans towards the window's centre, the current handle, by as much as
the costs are flat. That is what counters the lead on trained models, but on a feature map without contrast
(the tests' tiny random-weight generator) the handle stalls where it is; a valley radius ρ (centred on the
best match) removes the lean and the stall, and measured like the official tracker.
"""

from __future__ import annotations

import numpy as np
import torch

from .features import UpsampledView


class CentroidTracker:
    """Stateless centroid tracker of N handles for one drag (see module docstring)."""

    def __init__(self, view: UpsampledView, ref: torch.Tensor, radius: int, temperature: float = 0.2,
                 valley: int | None = None) -> None:
        """ref: [N, C] reference features F0(p0); radius: the official search radius r2 in pixels;
        temperature: τ, relative to the best cost; valley: ρ in pixels (default None: the whole window)."""
        assert ref.ndim == 2 and radius >= 0
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if valley is not None and valley < 0:
            raise ValueError(f"valley must be ≥ 0, got {valley}")
        self.view, self.ref, self.radius = view, ref, int(radius)
        self.temperature, self.valley = float(temperature), None if valley is None else int(valley)

    def state(self) -> dict[str, np.ndarray]:
        return {}          # nothing learnt: the reference features travel with the drag already

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def __call__(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """New integer (row, col) [N, 2] of every handle (on handles_rc's device).

        feat: [C, h, w] current block map (or a window at origin); handles_rc: [N, 2] int64;
        targets_rc: unused (the rule does not look at the target).
        """
        assert feat.ndim == 3 and self.ref.shape == (handles_rc.shape[0], feat.shape[0])
        height, width = self.view.image_hw
        with torch.no_grad():
            offsets = torch.arange(-self.radius, self.radius + 1, device=handles_rc.device)
            size = offsets.shape[0]
            rows = (handles_rc[:, 0:1] + offsets)[:, :, None].expand(-1, size, size).flatten(1)   # [N, K]
            cols = (handles_rc[:, 1:2] + offsets)[:, None, :].expand(-1, size, size).flatten(1)
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            values = self.view.pixels(feat.detach(), rows.clamp(0, height - 1), cols.clamp(0, width - 1), origin)
            cost = torch.linalg.norm(values - self.ref.t()[:, :, None], dim=0).to(torch.float64)  # [N, K]
            cost = cost.masked_fill(~inside, float("inf"))
            best = cost.argmin(dim=1, keepdim=True)
            least = cost.gather(1, best)
            best_r, best_c = rows.gather(1, best), cols.gather(1, best)
            near = inside
            if self.valley is not None:
                near = near & ((rows - best_r).abs() <= self.valley) & ((cols - best_c).abs() <= self.valley)
            scale = self.temperature * least
            excess = torch.where(near, cost - least, torch.full_like(cost, float("inf")))
            weight = torch.where(scale > 0, torch.exp(-excess / torch.where(scale > 0, scale, 1.0)),
                                 (excess == 0).to(cost.dtype))
            weight = weight / weight.sum(dim=1, keepdim=True)
            row = torch.round((weight * rows.to(cost.dtype)).sum(dim=1))
            col = torch.round((weight * cols.to(cost.dtype)).sum(dim=1))
            return torch.stack([row, col], dim=1).to(torch.int64)
