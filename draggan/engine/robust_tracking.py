"""FreeDrag-style point tracking: an adaptive feature template and a bounded line search with backtracking.

FreeDrag (Ling et al., CVPR 2024) observes that DragGAN's nearest-neighbour tracking in a square window jumps
to a similar-looking distractor (handle "miss") or drifts as the handle's appearance changes. It replaces the
free search by a search along the handle → target line, bounded per step, with a template that adapts only
when the match is trusted. We keep DragGAN's motion supervision and replace only the tracking step.

Per handle with integer position p (row, col), target t, the first step's reference feature R = F0(p0)
(exactly the official tracker's), an adaptive template T (initially R), a trust threshold τ and the current
upsampled feature map F (`UpsampledView.pixels`), cost c(q) = ½(‖F(q) − T‖₂ + ‖F(q) − R‖₂) — the template
follows the handle's changing appearance, the reference anchors it so it cannot drift onto what lies at a
stuck point:

1. Line band. u = (t − p)/|t − p|, n = u turned by 90°, m = min(max_move, |t − p|). Candidates
   q_{k,j} = round(p + (k/2)·u + j·n) for j = −lateral … lateral and k = −⌊2·max_move⌋ … ⌊2·max_move⌋
   (half-pixel steps along the line), clamped to the image and to the official window (|q − p|∞ ≤ r2).
   Forward candidates are those with 0 ≤ k ≤ ⌊2m⌋ (k = 0, j = 0 is p itself); backward ones have k < 0.
   When |t − p| = 0 only the forward ones with k = 0 exist.
2. Trusted forward move. q* = the forward candidate of least cost. If c(q*) ≤ τ the handle moves to q*
   and the template adapts: T ← (1 − β)·T + β·F(q*).
3. Backtracking. Otherwise the handle's feature is not ahead (it lags behind, or the drag pushed it
   aside): the handle moves to the least-cost candidate among all forward and backward ones, and the
   template is kept — never learnt from an untrusted match.

Ties go to the candidate nearest p: forward before backward, then smaller |k|, then smaller |j|.
τ = trust × σ, where σ is the mean of ‖F0(q) − R‖ over the official search window (radius r2, clipped to
the image) around p0: how different the handle's neighbourhood looks at the start, so the threshold is
scale-free across models and feature blocks. A handle moves at most about max_move pixels (default r2 − 1)
per step and stays near the handle → target line, so it can never jump across the window to a distractor.
Defaults (trust 1, β 0.1, lateral 1) were chosen on development pairs of the bundled 128-px model
(bench/drag_quality.py, seeds 0–15): a pure line (lateral 0) lost handles that the drag moved sideways, and
an unanchored template (cost ‖F(q) − T‖ alone) learnt whatever stayed at a stuck handle and never moved it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .features import UpsampledView


class LineSearchTracker:
    """Stateful FreeDrag-style tracker of N handles for one drag (see module docstring)."""

    def __init__(self, view: UpsampledView, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 radius: int, origin: tuple[int, int] = (0, 0), max_move: float | None = None,
                 trust: float = 1.0, beta: float = 0.1, lateral: int = 1) -> None:
        """ref: [N, C] reference features F0(p0); feat0: the first step's block map (or window at origin);
        radius: the official search radius r2 in pixels (σ's window; default max_move = radius − 1, ≥ 1)."""
        assert ref.ndim == 2 and handles_rc.shape == (ref.shape[0], 2) and radius >= 1
        if not (trust > 0 and 0 <= beta <= 1):
            raise ValueError(f"trust must be > 0 and beta in [0, 1], got {trust}, {beta}")
        if lateral < 0:
            raise ValueError(f"lateral must be ≥ 0, got {lateral}")
        self.view = view
        self.ref = ref.detach().clone()
        self.template = ref.detach().clone()
        self.lateral = int(lateral)
        self.radius = int(radius)
        self.max_move = float(max(radius - 1, 1) if max_move is None else max_move)
        if not self.max_move >= 0.5:
            raise ValueError(f"max_move must be ≥ 0.5 px, got {self.max_move}")
        self.beta = float(beta)
        self.trust = float(trust)
        self.threshold = self.trust * self._window_cost(feat0, handles_rc, radius, origin)  # [N]
        self.trusted = torch.ones(ref.shape[0], dtype=torch.bool)  # last step's decision per handle

    def state(self) -> dict[str, np.ndarray]:
        """The adaptive template, trust thresholds and last decisions (see `trackers.Tracker`)."""
        return {"template": self.template.detach().cpu().numpy().copy(),
                "threshold": self.threshold.detach().cpu().numpy().copy(),
                "trusted": self.trusted.cpu().numpy().copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        device = self.template.device
        self.template = torch.as_tensor(state["template"]).to(device).clone()
        self.threshold = torch.as_tensor(state["threshold"]).to(self.threshold.device).clone()
        self.trusted = torch.as_tensor(state["trusted"]).clone()

    def _window_cost(self, feat: torch.Tensor, handles_rc: torch.Tensor, radius: int,
                     origin: tuple[int, int]) -> torch.Tensor:
        """σ: mean ‖F(q) − T‖ over each handle's clipped square window of the given radius → [N]."""
        height, width = self.view.image_hw
        offsets = torch.arange(-radius, radius + 1, device=handles_rc.device)
        rows = (handles_rc[:, 0:1] + offsets)[:, :, None].expand(-1, -1, offsets.shape[0])
        cols = (handles_rc[:, 1:2] + offsets)[:, None, :].expand(-1, offsets.shape[0], -1)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        with torch.no_grad():
            values = self.view.pixels(feat.detach(), rows.clamp(0, height - 1), cols.clamp(0, width - 1), origin)
            cost = torch.linalg.norm(values - self.template.t()[:, :, None, None], dim=0)  # [N, K, K]
        cost = (cost * inside).flatten(1).sum(1) / inside.flatten(1).sum(1)
        return cost.cpu()

    def __call__(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """New integer (row, col) [N, 2] of every handle (on handles_rc's device); updates the templates.

        feat: [C, h, w] current block map (or a window at origin); handles_rc: [N, 2] int64;
        targets_rc: [N, 2] float (row, col).
        """
        height, width = self.view.image_hw
        device = handles_rc.device
        p = handles_rc.cpu().to(torch.float64)
        delta = targets_rc.cpu().to(torch.float64) - p
        dist = torch.linalg.norm(delta, dim=1)
        unit = torch.where(dist[:, None] > 0, delta / dist.clamp_min(1e-12)[:, None], torch.zeros_like(delta))
        normal = torch.stack([-unit[:, 1], unit[:, 0]], dim=1)
        n_back = int(math.floor(2 * self.max_move))
        n_fwd = torch.floor(2 * torch.minimum(dist, torch.full_like(dist, self.max_move))).to(torch.int64)  # [N]
        kk, jj = torch.meshgrid(torch.arange(-n_back, n_back + 1), torch.arange(-self.lateral, self.lateral + 1),
                                indexing="ij")
        rank = torch.where(kk >= 0, kk, n_back + 1 - kk) * (2 * self.lateral + 1) + jj.abs()   # preference order
        order = torch.argsort(rank.flatten(), stable=True)
        kk, jj = kk.flatten()[order], jj.flatten()[order]                                     # [K]
        offs = (kk[None, :, None].to(torch.float64) / 2) * unit[:, None, :] + jj[None, :, None] * normal[:, None, :]
        cand = torch.round(p[:, None, :] + offs.clamp(-self.radius, self.radius))              # [N, K, 2]
        cand[..., 0].clamp_(0, height - 1)
        cand[..., 1].clamp_(0, width - 1)
        cand = cand.to(torch.int64)
        forward = (kk[None, :] >= 0) & (kk[None, :] <= n_fwd[:, None])                         # [N, K]
        usable = forward | ((kk[None, :] < 0) & (dist[:, None] > 0))
        rows, cols = cand[..., 0].to(device), cand[..., 1].to(device)
        with torch.no_grad():
            values = self.view.pixels(feat.detach(), rows, cols, origin)                     # [C, N, K]
            cost = 0.5 * (torch.linalg.norm(values - self.template.t()[:, :, None], dim=0)
                          + torch.linalg.norm(values - self.ref.t()[:, :, None], dim=0)).cpu()      # [N, K]
        inf = torch.tensor(float("inf"), dtype=cost.dtype)
        fwd_best = torch.where(forward, cost, inf).argmin(dim=1)
        all_best = torch.where(usable, cost, inf).argmin(dim=1)
        fwd_cost = cost.gather(1, fwd_best[:, None])[:, 0]
        trusted = fwd_cost <= self.threshold
        pick = torch.where(trusted, fwd_best, all_best)
        new = cand[torch.arange(cand.shape[0]), pick]
        if bool(trusted.any()):
            chosen = values[:, torch.arange(cand.shape[0], device=device), pick.to(device)].t()  # [N, C]
            mix = self.beta * trusted.to(self.template.dtype).to(self.template.device)[:, None]
            self.template = (1 - mix) * self.template + mix * chosen
        self.trusted = trusted
        return new.to(device)
