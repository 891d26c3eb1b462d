"""Latents from a seed, owned by the generator: `G.z_from_seed(seed)` and `G.latent_from_seed(seed, psi)`.

The project's one definition of "the image of seed s": z = `np.random.RandomState(s).randn(1, z_dim)` (float64
draws, as NVIDIA's `gen_images.py` and the DragGAN demo make them, then cast to float32), mapped with
truncation ψ towards `w_avg` and label c (all zeros for an unconditional model, or when none is given). Both
StyleGAN2 and StyleGAN3 `Generator`s inherit `SeedLatents`, so the app, the CLI, recipes and benches all get
the same numbers from the same code.
"""

from __future__ import annotations

import numpy as np
import torch


class SeedLatents:
    """Mixin for a generator with `z_dim`, `c_dim` and a `mapping` network (z, c, ψ → ws)."""

    z_dim: int
    c_dim: int
    mapping: torch.nn.Module

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
