"""Conversion of generator output to displayable images, shared by the engine, inversion and the CLI."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(img: torch.Tensor, keep_grey: bool = False) -> np.ndarray:
    """[1, C, H, W] image in about [-1, 1] → uint8 [H, W, 3] (a grey image is repeated to RGB, or returned
    as [H, W] with `keep_grey`)."""
    assert img.ndim == 4 and img.shape[0] == 1, f"expected one NCHW image, got {tuple(img.shape)}"
    x = (img.detach()[0].to(torch.float32) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if x.shape[0] == 1:
        if keep_grey:
            return x[0].cpu().numpy()
        x = x.repeat(3, 1, 1)
    return x[:3].permute(1, 2, 0).cpu().numpy()
