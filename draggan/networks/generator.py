"""What our StyleGAN2 and StyleGAN3 generators share: z (+ label c) → `mapping` → ws → `synthesis` → image,
their sizes, the latents of a seed (`G.z_from_seed(seed)`, `G.latent_from_seed(seed, psi)`), and the
forward passes the drag engine asks of a synthesis network (`DragSynthesis`): the engine names no block's
insides, so each network family keeps its own variants of its forward pass.

The project's one definition of "the image of seed s": z = `np.random.RandomState(s).randn(1, z_dim)` (float64
draws, as NVIDIA's `gen_images.py` and the DragGAN demo make them, then cast to float32), mapped with
truncation ψ towards `w_avg` and label c (all zeros for an unconditional model, or when none is given). The
app, the CLI, recipes and benches all get the same numbers from this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Box:
    """Rows [r0, r1) × columns [c0, c1) of a feature map."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def origin(self) -> tuple[int, int]:
        return self.r0, self.c0

    def covers(self, height: int, width: int) -> bool:
        return self.r0 <= 0 and self.c0 <= 0 and self.r1 >= height and self.c1 >= width


class DragSynthesis(Protocol):
    """The synthesis network as the drag engine uses it. A "block" is what `feature_shapes` lists: a
    StyleGAN2 resolution block, a StyleGAN3 layer. A family that lacks a variant says so: `supports_windows`
    and `direct_render_supported` answer False and the methods raise NotImplementedError."""

    img_resolution: int

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each block's output, margins included."""

    def feature_margins(self) -> list[int]:
        """Pixels outside the image on each side of each block's output."""

    def default_feature_block(self) -> int:
        """The block whose output DragGAN reads (StyleGAN2: the 128 × 128 block of a 512 model)."""

    def supports_windows(self, noise_mode: str) -> bool:
        """Whether `features` can compute a window of a block (not the whole map) with this noise mode."""

    def features(self, ws: torch.Tensor, block: int, box: Box | None = None, *, noise_mode: str = "const",
                 grad_layers: int | None = None, coarse: int | None = None
                 ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Block `block`'s output for ws [1, num_ws, w_dim], margins cropped, float32 [C, h, w]: on the
        window `box` (None: the whole map by the plain forward pass), running no block above it, with
        unfused modulated convolutions; its origin (first row, column); and block `coarse`'s whole map
        (margins cropped) when asked, else None. `grad_layers`: only the style layers below it need
        gradients (a windowed computation may skip the others')."""

    def direct_render_supported(self, device: torch.device) -> bool:
        """Whether `render_direct` is the cheaper render on `device`."""

    def render_direct(self, ws: torch.Tensor, noise_mode: str = "const", preview: bool = False) -> torch.Tensor:
        """The image [1, C, H, W] float32 of ws (no gradients): exact, or a cheaper preview."""


class StyleGenerator(torch.nn.Module):
    """Base of `stylegan2.Generator` / `stylegan3.Generator`; subclasses set `family`, `synthesis`, `mapping`,
    `num_ws`, `img_height` and `img_width` in their constructor."""

    family: str
    synthesis: DragSynthesis
    mapping: torch.nn.Module

    def __init__(self, init_kwargs: dict[str, Any]) -> None:
        """`init_kwargs`: the subclass's constructor arguments (JSON-able; rebuilds it via `build_generator`)."""
        super().__init__()
        self.init_kwargs = init_kwargs
        self.z_dim: int = init_kwargs["z_dim"]                    # latent z size (0: label-only model)
        self.c_dim: int = init_kwargs["c_dim"]                    # label size (0: unconditional)
        self.w_dim: int = init_kwargs["w_dim"]                    # intermediate latent w size
        self.img_resolution: int = init_kwargs["img_resolution"]  # output height in pixels
        self.img_channels: int = init_kwargs["img_channels"]      # 3 (RGB) or 1 (grey)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs: Any):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

    def _mapping_device(self) -> torch.device:
        return next(self.mapping.parameters()).device

    def z_from_seed(self, seed: int) -> torch.Tensor:
        """z [1, z_dim] float32 on the generator's device: `RandomState(seed).randn(1, z_dim)`; seed in [0, 2**32)."""
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        z = np.random.RandomState(int(seed)).randn(1, self.z_dim)
        return torch.from_numpy(z).to(device=self._mapping_device(), dtype=torch.float32)

    @torch.no_grad()
    def latent_from_seed(self, seed: int, psi: float = 1.0, c: torch.Tensor | None = None,
                         truncation_cutoff: int | None = None) -> torch.Tensor:
        """ws [1, num_ws, w_dim] float32 (no grad) = mapping(z_from_seed(seed), c, ψ).

        `c`: label [1, c_dim] of a conditional model; None means all zeros (unconditional models ignore it).
        """
        device = self._mapping_device()
        if c is None:
            c = torch.zeros([1, self.c_dim], device=device)
        ws = self.mapping(self.z_from_seed(seed), c.to(device), truncation_psi=psi,
                          truncation_cutoff=truncation_cutoff)
        return ws.to(torch.float32)
