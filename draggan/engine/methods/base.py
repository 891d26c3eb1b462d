"""The drag-method protocol: what one way of dragging supplies to a drag step.

A drag step (`engine/step.py`) synthesises the feature block, then asks the drag's method, in this order:
`track` (where the handles are now), `arrived` (is the drag over), and unless it is, `motion_loss` (the loss
that moves the handles: DragGAN's motion supervision or a method's replacement of it). The step adds the
painted mask's fixed-region term itself, and, while no mask is painted, the keep-the-rest term
(`locality.py`) weighted by the method's `keep_lambda`. Adam's step size is `DragConfig.lr × lr_scale`.

A method object is made once per drag, at its first step (or when a drag continues from a snapshot, then
`load_state` restores what it learnt). Everything it needs of the session's geometry is a `DragGeometry`.
Points are integer (row, col) image pixels here; `targets_rc` float64 (row, col) on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np
import torch

from ..features import UpsampledView
from ..motion import official_grid


@dataclass(frozen=True)
class DragGeometry:
    """The session's sizes that a method reads: the feature view and the radii, in image pixels."""

    view: UpsampledView                      # the feature block read as its upsampling to the image size
    r1_px: int                               # motion-supervision radius
    r2_px: int                               # point-tracking search half-size
    arrive_px: float                         # a handle this close to its target has arrived
    grid: tuple[torch.Tensor, torch.Tensor]  # motion.official_grid(H, W)

    @classmethod
    def create(cls, view: UpsampledView, r1_px: int, r2_px: int, arrive_px: float) -> "DragGeometry":
        return cls(view, int(r1_px), int(r2_px), float(arrive_px), official_grid(*view.image_hw))


class DragMethod(Protocol):
    """One way of dragging, for one drag. Class attributes describe the method; the registry
    (`methods/__init__.py`) lists the classes, and the page, recipes and benches read it."""

    name: ClassVar[str]                    # recorded in snapshots and recipes; never changes once shipped
    label: ClassVar[str]                   # shown in the page's "Drag method" menu
    help: ClassVar[str]                    # one line under that menu
    lr_scale: ClassVar[float]              # Adam's step size in units of DragConfig.lr (recipes record lr)
    keep_lambda: ClassVar[float]           # weight of the keep-the-rest term while no mask is painted (0: none)
    replaces: ClassVar[tuple[str, ...]]    # retired method names whose recipes replay with this method

    def __init__(self, geometry: DragGeometry, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> None:
        """ref: [N, C] handle features of the first step's map feat0 [C, h, w] (or its window at origin);
        handles_rc: [N, 2] int64 start handles."""

    def track(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
              origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Point tracking: the handles' new integer (row, col) [N, 2] on `feat` (the current map or window)."""

    def arrived(self, distances: Sequence[float]) -> bool:
        """Whether the drag is over, given each tracked handle's distance to its target (pixels)."""

    def motion_loss(self, feat: torch.Tensor, handles_rc: torch.Tensor, targets_rc: torch.Tensor,
                    origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """The loss that moves the handles (differentiable in feat); handles_rc as `track` returned them."""

    def state(self) -> dict[str, np.ndarray]:
        """What the method learnt during the drag, as CPU arrays (travels in a `DragSnapshot`)."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from `state()` of the same drag's method object (bit for bit)."""
