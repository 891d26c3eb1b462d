"""A cheaper preview of a StyleGAN2 image for the live view: every layer, in bfloat16, channels-last, on CPU.

The preview runs exactly the layers the full render runs — nothing of the image is left out — but each
modulated convolution as one convolution with the modulated, demodulated weights (batch 1), on bfloat16
activations in channels-last layout (oneDNN's fast CPU path), with the activation gain folded into the
weights, bias and noise (g·lrelu(v) = lrelu(g·v) for g > 0) and bias, noise, activation and clamp applied
in place; the skip image is accumulated in float32. On the FFHQ-512 config at one thread this is about 5×
cheaper than the float32 render (random weights: PSNR ~49 dB against it; the bundled 128-pixel cartoon
model ~57 dB). Measured and rejected: CPU autocast of the whole network (~2× cheaper, ~42 dB); stopping the
synthesis one or two blocks early and upsampling the skip image (2× / 4× cheaper but 12–17 dB: the top
ToRGB layers carry much of the image).

Only StyleGAN2 on CPU is previewed: on GPUs the full render is already cheap, and StyleGAN3 has no such
path here; there `preview_supported` is False and callers render in full (the time-driven render policy
then simply renders less often). The exact float32 render stays the image on arrival, on Stop and on export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..networks.ops import bias_act, conv2d_resample, upsample2d

_DTYPE = torch.bfloat16


def preview_supported(synthesis: torch.nn.Module, device: torch.device) -> bool:
    """Whether `render_preview` applies to `synthesis` on `device` (a StyleGAN2 synthesis network on CPU)."""
    return device.type == "cpu" and hasattr(synthesis, "block_resolutions")


def _layer(layer: torch.nn.Module, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
    """One SynthesisLayer (modulated 3×3 conv, noise, bias, lrelu, clamp) on bfloat16 channels-last x."""
    gain = layer.act_gain
    weight = layer.weight * layer.affine(w).reshape(1, -1, 1, 1)
    weight = weight * ((weight.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt() * gain)
    x = conv2d_resample(x, weight.to(_DTYPE), f=layer.resample_filter, up=layer.up, padding=layer.padding,
                        flip_weight=(layer.up == 1))
    if layer.use_noise and noise_mode != "none":
        if noise_mode == "const":
            noise = layer.noise_const
        else:
            noise = torch.randn([layer.resolution, layer.width], device=x.device)
        x.add_((noise * (layer.noise_strength * gain)).to(_DTYPE)[None, None])
    x.add_((layer.bias * gain).to(_DTYPE).reshape(1, -1, 1, 1))
    F.leaky_relu_(x, 0.2)
    if layer.conv_clamp is not None:
        x.clamp_(-layer.conv_clamp, layer.conv_clamp)
    return x


def _torgb(torgb: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ToRGB (modulated 1×1 conv without demodulation, bias, clamp) → float32."""
    weight = torgb.weight * (torgb.affine(w) * torgb.weight_gain).reshape(1, -1, 1, 1)
    y = F.conv2d(x, weight.to(_DTYPE)).to(torch.float32)
    return bias_act(y, torgb.bias, clamp=torgb.conv_clamp)


def render_preview(synthesis: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
    """Preview image [1, C, H, W] float32 of ws [1, num_ws, w_dim] (StyleGAN2 synthesis, no gradients)."""
    assert ws.shape[0] == 1, "previews are rendered one latent at a time"
    ws = ws.to(torch.float32)
    x = img = None
    w_idx = 0
    with torch.no_grad():
        for res in synthesis.block_resolutions:
            block = getattr(synthesis, f"b{res}")
            cur = ws[:, w_idx:w_idx + block.num_conv + block.num_torgb].unbind(dim=1)
            w_idx += block.num_conv
            if block.in_channels == 0:
                x = block.const.to(_DTYPE)[None].contiguous(memory_format=torch.channels_last)
                x = _layer(block.conv1, x, cur[0], noise_mode)
            else:
                x = _layer(block.conv0, x, cur[0], noise_mode)
                x = _layer(block.conv1, x, cur[1], noise_mode)
            if img is not None and block.architecture == "skip":
                img = upsample2d(img, block.resample_filter)
            if block.is_last or block.architecture == "skip":
                y = _torgb(block.torgb, x, cur[block.num_conv])
                img = img + y if (img is not None and block.architecture == "skip") else y
    return img
