"""The dtype a synthesis network's fp16 layers compute in: NVIDIA's device rule, or a dtype chosen for them.

NVIDIA's generators mark their top resolutions `use_fp16` (`num_fp16_res`) and run them in float16 on CUDA
only, in float32 elsewhere (their CPU kernels had no half support). Each such block (StyleGAN2) or layer
(StyleGAN3) also holds a `half_dtype`, None by default, which `set_half_dtype` sets for a whole network:
- None: NVIDIA's rule — float16 on CUDA, float32 on any other device (`block_dtype`);
- torch.float32: the fp16 layers off, on every device (the exact reference on a GPU);
- torch.float16 / torch.bfloat16: the fp16 layers on, on every device — the CPU runs CUDA's half-precision
  branch with it (its dtype casts, the float16 demodulation's pre-scaling, the half features the drag reads),
  which is how the tests check that branch without a GPU.
`force_fp32=True` in a forward call still wins (float32 whatever the setting).
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device, half_dtype: torch.dtype | None = None
                ) -> torch.dtype:
    """The dtype of one block's (or layer's) activations on `device` (module docstring)."""
    if not use_fp16 or force_fp32:
        return torch.float32
    if half_dtype is not None:
        return half_dtype
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def set_half_dtype(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """Set the `half_dtype` of every fp16-capable block or layer in `module` (a generator or its synthesis
    network); None restores NVIDIA's device rule. Returns `module`."""
    if dtype is not None and dtype not in HALF_DTYPES:
        raise ValueError(f"half dtype must be None or one of {HALF_DTYPES}, not {dtype}")
    for child in module.modules():
        if hasattr(child, "half_dtype"):
            child.half_dtype = dtype
    return module
