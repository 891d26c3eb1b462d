"""Drag settings (`DragConfig`) and the latent spaces a drag optimises.

W+ optimises one code per style layer for the first `num_layers` layers; W optimises one code shared by
them. The layers above stay at the start latent in both. Radii are in pixels of a 512-pixel-high image and
scale with H/512 (at least 1 px: below 86-pixel-high images the official rounding gives r1 = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..limits import check_number
from . import methods

Point = tuple[float, float]
SPACES = ("w", "w+")


@dataclass(frozen=True)
class DragConfig:
    """Drag hyper-parameters, validated. Frozen: the defaults here are the app's defaults too; change a
    session's with `DragSession.update_config` (the shape-defining ones are fixed for a session)."""

    # the optimisation
    space: str = "w+"                 # "w+" (per-layer codes) or "w" (one shared code)
    lr: float = 1e-3                  # Adam step size (the paper uses 2e-3 on FFHQ / AFHQ-cat / car)
    num_layers: int = 6               # style layers optimised; the rest stay at the start latent
    max_steps: int = 200              # steps of one `run()` unless it is given another limit
    tracker: str = methods.DEFAULT    # drag method, one of methods.names()
    # the radii, at 512 px
    r1: float = 3.0                   # motion-supervision radius
    r2: float = 12.0                  # point-tracking search half-size
    # the fixed region (a painted mask)
    mask_lambda: float = 20.0         # weight of the fixed-region term
    # the synthesis
    feature_block: int | None = None  # synthesis block (StyleGAN3: layer) read as features; None = the network's
    noise_mode: str = "const"
    windowed: bool = True             # compute the feature block only where the step reads it, where the network can

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        check_number("lr", self.lr)                     # the bounds are the limits table's (draggan.limits)
        check_number("mask_lambda", self.mask_lambda)
        if not (self.r1 > 0 and self.r2 > 0):
            raise ValueError(f"r1 and r2 must be positive, got {self.r1}, {self.r2}")
        if self.max_steps < 0 or self.num_layers < 1:
            raise ValueError("max_steps must be ≥ 0 and num_layers ≥ 1")
        methods.get(self.tracker)

    def radii_px(self, height: int) -> tuple[int, int, float]:
        """(r1, r2, arrival distance) in pixels of an image `height` pixels high."""
        scale = height / 512
        return max(round(self.r1 * scale), 1), max(round(self.r2 * scale), 1), max(2 * scale, 2.0)
