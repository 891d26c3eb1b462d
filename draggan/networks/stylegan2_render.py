"""The CPU render of a StyleGAN2 image, direct: exact in float32, and a cheaper preview in bfloat16
(`SynthesisNetwork.render_direct`).

Both run every layer the synthesis network runs — nothing of the image is left out — but each
modulated convolution as one convolution with the modulated, demodulated weights (batch 1), in channels-last
layout (oneDNN's fast CPU path), with the activation gain folded into the weights, bias and noise
(g·lrelu(v) = lrelu(g·v) for g > 0) and bias, noise, activation and clamp applied in place; the skip image is
accumulated in float32.
- float32 (the exact image): the same image as `synthesis(ws)` up to float rounding (max |Δ| ~2e-5 on the
  FFHQ-512 config, about 1 in 6000 uint8 values off by one — the size of the difference between NVIDIA's own
  fused and unfused modulated convolutions), at about half its CPU time. The session shows it on arrival,
  on Stop and for export.
- `preview_dtype()` (the preview): about 2× cheaper again; the live view while a drag runs. From 512 pixels
  up (`HALF_TOP_FROM`) it also runs the last block at half resolution — the same layers and ToRGB on the
  previous block's grid (its up-sampling convolution as the plain 3×3 convolution with the same, flipped
  kernel; noise subsampled) — and FIR-upsamples the image, so that a view every ~2 s costs at most ~15 % of
  a drag. Below 512 the full-resolution preview is kept: the renders are cheap there and the last block
  carries more of the image. Measurements: docs/experiments.md.

On GPUs the synthesis network is already fast: there (and for StyleGAN3) callers use `synthesis(ws)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ops import bias_act, conv2d_resample, upsample2d

HALF_TOP_FROM = 512   # image resolution from which the preview runs its last block at half resolution


def preview_dtype() -> torch.dtype:
    """bfloat16 where oneDNN runs it natively or emulated on AVX-512 (PyTorch's own check), else float32:
    elsewhere bfloat16 convolutions fall back to slow reference kernels and the preview would cost more
    than the exact image (float32 previews keep the half-resolution last block, ~25 % cheaper at 512)."""
    return torch.bfloat16 if _bf16_convolutions_supported() else torch.float32


def _bf16_convolutions_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _layer(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, noise_mode: str,
           half: bool = False) -> torch.Tensor:
    """One SynthesisLayer (modulated 3×3 conv, noise, bias, lrelu, clamp) on channels-last x, in x's dtype;
    `half`: on the grid it reads instead of the one it would upsample to (see the module docstring)."""
    gain = layer.act_gain
    weight = layer.weight * layer.affine(w).reshape(1, -1, 1, 1)
    weight = weight * ((weight.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt() * gain)
    up = 1 if half else layer.up
    x = conv2d_resample(x, weight.to(x.dtype), f=layer.resample_filter, up=up, padding=layer.padding,
                        flip_weight=(layer.up == 1))
    if layer.use_noise and noise_mode != "none":
        if noise_mode == "const":
            noise = layer.noise_const[::2, ::2] if half else layer.noise_const
        else:
            noise = torch.randn(x.shape[2:], device=x.device)
        x.add_((noise * (layer.noise_strength * gain)).to(x.dtype)[None, None])
    x.add_((layer.bias * gain).to(x.dtype).reshape(1, -1, 1, 1))
    F.leaky_relu_(x, 0.2)
    if layer.conv_clamp is not None:
        x.clamp_(-layer.conv_clamp, layer.conv_clamp)
    return x


def _torgb(torgb: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ToRGB (modulated 1×1 conv without demodulation, bias, clamp) → float32."""
    weight = torgb.weight * (torgb.affine(w) * torgb.weight_gain).reshape(1, -1, 1, 1)
    y = F.conv2d(x, weight.to(x.dtype)).to(torch.float32)
    return bias_act(y, torgb.bias, clamp=torgb.conv_clamp)


def render(synthesis: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const", preview: bool = False,
           half_top: bool | None = None) -> torch.Tensor:
    """Image [1, C, H, W] float32 of ws [1, num_ws, w_dim] (no gradients): exact (float32 activations), or
    with `preview` in `preview_dtype()`, its last block at half resolution when `half_top` (by default: from
    `HALF_TOP_FROM` pixels up)."""
    if not preview:
        return _render(synthesis, ws, noise_mode, torch.float32, half_top=False)
    if half_top is None:
        half_top = synthesis.img_resolution >= HALF_TOP_FROM
    return _render(synthesis, ws, noise_mode, preview_dtype(), half_top)


def _render(synthesis: torch.nn.Module, ws: torch.Tensor, noise_mode: str, dtype: torch.dtype,
            half_top: bool) -> torch.Tensor:
    assert ws.shape[0] == 1, "previews are rendered one latent at a time"
    ws = ws.to(torch.float32)
    x = img = None
    w_idx = 0
    with torch.no_grad():
        for res in synthesis.block_resolutions:
            block = getattr(synthesis, f"b{res}")
            cur = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb].unbind(dim=1)
            w_idx += block.num_conv
            half = half_top and block.is_last and block.in_channels != 0
            if block.in_channels == 0:
                x = block.const.to(dtype)[None].contiguous(memory_format=torch.channels_last)
                x = _layer(block.conv1, x, cur[0], noise_mode)
            else:
                x = _layer(block.conv0, x, cur[0], noise_mode, half)
                x = _layer(block.conv1, x, cur[1], noise_mode, half)
            if img is not None and block.architecture == "skip" and not half:
                img = upsample2d(img, block.resample_filter)
            if block.is_last or block.architecture == "skip":
                y = _torgb(block.torgb, x, cur[block.num_conv])
                img = img + y if (img is not None and block.architecture == "skip") else y
            if half:
                img = upsample2d(img, block.resample_filter)
    return img
