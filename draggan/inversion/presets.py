"""The inversion presets the page offers, by name: step counts per stage and where the projection looks.

One table for every door: the photo panel's *Preset* choice and the CLI's `invert --preset NAME` read it.

- **Fast** is the CPU preset: a 512-px photo in about a minute on 2 cores (one thread per job). Its
  projection fits the generator's 256-px image (`project_size`: the skip image below the top block, so
  that block is not run while the loss cannot see it; LPIPS reads 256 px) to the photo area-downsampled
  to 256, in bfloat16 where the CPU runs it (`InversionConfig.project_bf16`), then a short pivotal tuning
  at full size in float32 fits the detail. At 256 px and below it is the same schedule at full size.
- **Quick**, **Balanced**, **Best**: the projection at full size; *Best* is NVIDIA's projector and the PTI
  paper's schedule, the default on an accelerator.

Times and PSNR per preset and size are in the README ("Editing your own photos"), from `bench/photo_presets.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import LimitError
from .config import InversionConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """Step counts of the three stages, the projection's image size (0: full) and whether it may run in
    bfloat16 (see `InversionConfig`)."""

    w_steps: int
    wplus_steps: int
    pti_steps: int
    project_size: int = 0
    project_bf16: bool = False

    @property
    def steps(self) -> tuple[int, int, int]:
        """(W, W+, PTI) steps, as the page's step fields show them."""
        return self.w_steps, self.wplus_steps, self.pti_steps

    def config(self, **overrides: Any) -> InversionConfig:
        """The `InversionConfig` of this preset, with `overrides` (step counts included) on top."""
        fields = dict(w_steps=self.w_steps, wplus_steps=self.wplus_steps, pti_steps=self.pti_steps,
                      project_size=self.project_size, project_bf16=self.project_bf16)
        fields.update(overrides)
        return InversionConfig(**fields)


PRESETS: dict[str, Preset] = {
    "Fast": Preset(11, 6, 3, project_size=256, project_bf16=True),
    "Quick": Preset(50, 25, 50),
    "Balanced": Preset(200, 100, 150),
    "Best": Preset(400, 200, 300),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; `LimitError` (a `ValueError`) naming the choices otherwise."""
    if name not in PRESETS:
        raise LimitError("preset", f"Unknown preset {str(name)[:40]!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


FAST_FROM_PX = 512   # on a CPU, Fast is the default from this model resolution up; Quick below it


def default_preset(device_type: str, resolution: int) -> str:
    """The preset a photo starts with, by device and the model's resolution (its larger side, pixels): on an
    accelerator the full schedule (Best); on a CPU Fast from `FAST_FROM_PX` up, where a full-size step costs
    ~4 CPU-s at 512 px, and Quick below, where full-size steps are cheap and Fast's few steps fall short
    (measured on the bundled 128-px model: Fast 30.4 dB in 3 CPU-s, Quick 52.0 dB in 21 CPU-s; README). The page and
    the CLI both start from this rule."""
    if device_type != "cpu":
        return "Best"
    return "Fast" if resolution >= FAST_FROM_PX else "Quick"
