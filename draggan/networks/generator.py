"""What our StyleGAN2 and StyleGAN3 generators share: z (+ label c) → `mapping` → ws → `synthesis` → image,
their sizes, and the latents of a seed (`G.z_from_seed(seed)`, `G.latent_from_seed(seed, psi)`).

The project's one definition of "the image of seed s": z = `np.random.RandomState(s).randn(1, z_dim)` (float64
draws, as NVIDIA's `gen_images.py` and the DragGAN demo make them, then cast to float32), mapped with
truncation ψ towards `w_avg` and label c (all zeros for an unconditional model, or when none is given). The
app, the CLI, recipes and benches all get the same numbers from this code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class StyleGenerator(torch.nn.Module):
    """Base of `stylegan2.Generator` / `stylegan3.Generator`; subclasses set `family`, `synthesis`, `mapping`,
    `num_ws`, `img_height` and `img_width` in their constructor."""

    family: str
    synthesis: torch.nn.Module
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
