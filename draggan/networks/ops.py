"""Small pure-PyTorch ops shared by our StyleGAN2 and StyleGAN3 networks.

These reproduce the semantics of NVIDIA's reference (non-CUDA) code paths — `upfirdn2d`, `bias_act`,
`conv2d_resample`, modulated convolution — so that weights from NVIDIA's pickles give the same numbers.
No custom CUDA kernels are compiled: every op is a composition of standard torch functions, so the same
code runs on CUDA, Apple MPS and CPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

ACTIVATION_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0)}


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit mean square along `dim` (pixel norm of the mapping network's input)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float = 0.2,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (channel dim 1), apply `act`, scale by `gain` and clamp to ±`clamp`."""
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    elif act != "linear":
        raise ValueError(f"unsupported activation {act!r}")
    gain = ACTIVATION_GAINS[act] if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(f: Sequence[float] | np.ndarray | torch.Tensor, normalize: bool = True,
                 separable: bool | None = None, gain: float = 1.0) -> torch.Tensor:
    """Turn filter taps into the 1D (separable) or 2D FIR filter tensor NVIDIA's code stores as a buffer."""
    f = torch.as_tensor(np.asarray(f, dtype=np.float32))
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f.ger(f)
    if normalize:
        f = f / f.sum()
    return f * (gain ** (f.ndim / 2))


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    assert len(v) == 2
    return int(v[0]), int(v[1])


def _padding4(padding: int | Sequence[int]) -> list[int]:
    """Return [x0, x1, y0, y1] padding from an int, [x, y] or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        return [padding] * 4
    if len(padding) == 2:
        px, py = padding
        return [px, px, py, py]
    assert len(padding) == 4
    return [int(p) for p in padding]


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a 1D or 2D FIR filter; (1, 1) for none."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[-1], f.shape[-2]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int | Sequence[int] = 1, down: int | Sequence[int] = 1,
              padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with FIR filter `f` and downsample, per channel."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    n, c, h, w = x.shape
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _padding4(padding)
    if upx > 1 or upy > 1:
        x = x.reshape([n, c, h, 1, w, 1])
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([n, c, h * upy, w * upx])
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f * (gain ** (f.ndim / 2))
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=c)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=c)
        x = F.conv2d(x, f.unsqueeze(3), groups=c)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """2x (or `up`x) FIR upsampling that keeps the image centred (NVIDIA's `upfirdn2d.upsample2d`)."""
    fw, fh = filter_size(f)
    p = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=p, gain=up * up)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                    padding: int = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """2D convolution with optional FIR upsampling, as NVIDIA's `conv2d_resample` (down=1 paths)."""
    out_channels, in_per_group, kh, kw = w.shape
    px0, px1, py0, py1 = _padding4(padding)
    if up == 1:
        assert px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0
        if not flip_weight and (kw > 1 or kh > 1):
            w = w.flip([2, 3])
        return F.conv2d(x, w, padding=[py0, px0], groups=groups)
    fw, fh = filter_size(f)
    px0 += (fw + up - 1) // 2
    px1 += (fw - up) // 2
    py0 += (fh + up - 1) // 2
    py1 += (fh - up) // 2
    if kw == 1 and kh == 1:
        x = F.conv2d(x, w, groups=groups)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up)
    if groups == 1:
        w = w.transpose(0, 1).contiguous()   # a transposed view costs CPU backward passes up to 1.5x more
    else:
        w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    if flip_weight:  # conv_transpose2d flips implicitly; NVIDIA's wrapper is called with (not flip_weight).
        w = w.flip([2, 3])
    x = F.conv_transpose2d(x, w, stride=up, padding=[pyt, pxt], groups=groups)
    return upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    weight_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    `fused_modconv=True` builds per-sample weights and runs a grouped convolution (NVIDIA's inference path);
    `False` scales the input by the styles, runs one shared-weight convolution and demodulates the output.
    Both give the same numbers; the second makes backward produce style gradients without any per-sample
    weight gradient, which is what the drag optimisation needs. `weight_sq`: Σ_k weight[o, i, k]² as [I, O]
    for the unfused demodulation (the layer caches it; computed here when None).
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert styles.shape == (batch_size, in_channels), (styles.shape, batch_size, in_channels)
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
        weight_sq = None
    w = None
    dcoefs = None
    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    elif demodulate:
        # Σ_ik (s_i·w_oik)² = Σ_i s_i² · Σ_k w_oik²: no [N, O, I, k, k] tensor (nor its backward) is built.
        if weight_sq is None:
            weight_sq = weight.square().sum(dim=[2, 3]).t()
        dcoefs = (styles.square() @ weight_sq + 1e-8).rsqrt()
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=batch_size,
                        flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)  # in x's dtype, as NVIDIA's in-place add: a float32 noise must not promote it
    return x


class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalised learning rate (parameter names `weight`, `bias` as NVIDIA's)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding: int | Sequence[int] = 0,
                   gain: float = math.sqrt(2.0), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False) -> torch.Tensor:
    """StyleGAN3's alias-free nonlinearity: bias, FIR upsample by `up`, leaky ReLU (× gain, clamped), FIR
    downsample by `down`.

    The same sequence as NVIDIA's reference (non-CUDA) `filtered_lrelu`, built from `bias_act` and
    `upfirdn2d`; `padding` ([x0, x1, y0, y1]) applies to the upsampled image.
    """
    assert x.ndim == 4, f"x must be NCHW, got {tuple(x.shape)}"
    assert isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1
    n, c, in_h, in_w = x.shape
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    px0, px1, py0, py1 = _padding4(padding)
    out_w = (in_w * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    x = bias_act(x, b, act="linear", gain=1.0)
    x = upfirdn2d(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up * up, flip_filter=flip_filter)
    x = bias_act(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d(x, fd, down=down, flip_filter=flip_filter)
    assert x.shape == (n, c, out_h, out_w), (tuple(x.shape), (n, c, out_h, out_w))
    return x
