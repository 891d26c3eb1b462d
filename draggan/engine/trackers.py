"""The point trackers a drag can use, by name: `DragConfig.tracker` selects one from `TRACKERS`.

A tracker is created once per drag, at its first step, from that step's feature map, and then called every
step with the current map, handles and targets; it returns the new integer (row, col) handles.

- "official": DragGAN's nearest-feature search in the r2 window (`tracking.track_points`), bit for bit.
- "freedrag": FreeDrag-style adaptive template and bounded line search with backtracking
  (`robust_tracking.LineSearchTracker`).
- "freedrag-ms": FreeDrag's actual method (`freedrag.FreeDragTracker`): no tracking search; the handle is a
  line-searched next point and the tracker also supplies the motion-supervision loss (`supervise`) and the
  arrival test (`settled`), which replace the session's own, and takes 4× the drag's step size (`lr_scale`).
- "freedrag-local": freedrag-ms, and while no mask is painted the session also holds the image away from the
  drag still (`locality.py`: the official fixed-region term with an automatic mask on the 32 × 32 block,
  weight `KEEP_LAMBDAS`), for less collateral change.
- "centroid": the official search, read as the soft-argmin centre of the matching valley instead of its
  argmin (`centroid_tracking.CentroidTracker`): the handle stays on the content instead of running ahead on
  the feature smear that motion supervision leaves.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch

from .centroid_tracking import CentroidTracker
from .features import UpsampledView
from .freedrag import FreeDragTracker
from .robust_tracking import LineSearchTracker
from .tracking import track_points


class Tracker(Protocol):
    def __call__(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> torch.Tensor: ...

    def state(self) -> dict[str, np.ndarray]:
        """What the tracker learnt during the drag, as CPU arrays (travels in a `DragSnapshot`)."""

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state()` of the same drag's tracker (bit for bit)."""

    # Optional, for a method that replaces motion supervision (FreeDrag): `supervise(feat, origin) -> loss`
    # is the step's motion loss instead of the official one, `settled: bool` says the drag arrived, and
    # `lr_scale: float` multiplies the drag's step size (DragConfig.lr, which recipes record, stays as set).


class OfficialTracker:
    """DragGAN's tracking: every step, the nearest match of the first step's reference in the r2 window."""

    def __init__(self, view: UpsampledView, ref: torch.Tensor, radius: int) -> None:
        self.view, self.ref, self.radius = view, ref, radius

    def __call__(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        return track_points(self.view, feat, self.ref, handles_rc, self.radius, origin)

    def state(self) -> dict[str, np.ndarray]:
        return {}          # nothing learnt: the reference features travel with the drag already

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        pass


TrackerFactory = Callable[[UpsampledView, torch.Tensor, torch.Tensor, torch.Tensor, int, tuple[int, int]], Tracker]


def _freedrag(view: UpsampledView, ref: torch.Tensor, feat0: torch.Tensor, handles: torch.Tensor, radius: int,
              origin: tuple[int, int]) -> FreeDragTracker:
    return FreeDragTracker(view, feat0, handles, radius, origin)


TRACKERS: dict[str, TrackerFactory] = {
    "official": lambda view, ref, feat0, handles, radius, origin: OfficialTracker(view, ref, radius),
    "freedrag": lambda view, ref, feat0, handles, radius, origin: LineSearchTracker(view, ref, feat0, handles,
                                                                                    radius, origin),
    "centroid": lambda view, ref, feat0, handles, radius, origin: CentroidTracker(view, ref, radius),
    "freedrag-ms": _freedrag,
    "freedrag-local": _freedrag,     # the same tracker; the session adds the keep term (KEEP_LAMBDAS)
}
TRACKER_NAMES = tuple(TRACKERS)

# λ of the session's keep-the-rest term (locality.py) for the trackers that want it; the others have none.
# A property of the name, not of a tracker object: the first step of a drag (or of a resumed one) needs it
# before its tracker exists.
KEEP_LAMBDAS: dict[str, float] = {"freedrag-local": 20.0}


def keep_lambda(name: str) -> float:
    """Weight of the keep-the-rest term for tracker `name` (0: no term)."""
    return KEEP_LAMBDAS.get(name, 0.0)


def make_tracker(name: str, view: UpsampledView, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 radius: int, origin: tuple[int, int] = (0, 0)) -> Tracker:
    """The tracker `name` for one drag. ref: [N, C] handle features of the first step's map feat0
    (or its window at origin); handles_rc: [N, 2] int64 start handles; radius: r2 in pixels."""
    if name not in TRACKERS:
        raise ValueError(f"tracker must be one of {TRACKER_NAMES}, got {name!r}")
    return TRACKERS[name](view, ref, feat0, handles_rc, radius, origin)
