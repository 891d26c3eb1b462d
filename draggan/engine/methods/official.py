"""DragGAN's own step (Pan et al. 2023, official `viz/renderer.py`): nearest-feature point tracking in the r2
window (`tracking.py`), motion supervision on the r1 disk (`motion.py`), arrival within `arrive_px`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..motion import motion_loss, plan_motion
from ..tracking import track_points
from .base import DragGeometry


class Official:
    """The official DragGAN method (the default)."""

    name = "official"
    label = "Official (DragGAN)"
    help = "Official: DragGAN's nearest-feature search and motion supervision, exactly."
    lr_scale = 1.0
    keep_lambda = 0.0
    # Retired variants of the official search, measured no better (docs/experiments.md): their recipes
    # replay with this method.
    replaces = ("freedrag", "centroid")

    def __init__(self, geometry: DragGeometry, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> None:
        self.geometry, self.ref = geometry, ref

    def track(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
              origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        return track_points(self.geometry.view, feat, self.ref, handles_rc, self.geometry.r2_px, origin)

    def arrived(self, distances: Sequence[float]) -> bool:
        return all(d <= self.geometry.arrive_px for d in distances)

    def motion_loss(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                    origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        plan = plan_motion(handles_rc.cpu(), targets_rc, self.geometry.r1_px, self.geometry.grid)
        if plan is None:
            return feat.new_zeros([])
        return motion_loss(self.geometry.view, feat, plan.to(feat.device), origin)

    def state(self) -> dict[str, np.ndarray]:
        return {}          # nothing learnt: the reference features travel with the drag already

    def load_state(self, state: dict[str, Any]) -> None:
        pass
