"""StyleGAN3 generator (NVIDIA `stylegan3` / `networks_stylegan3`, configs T and R) in pure PyTorch.

Module, parameter and buffer names match NVIDIA's, so a network pickle's tensors load by name with
`load_state_dict(strict=True)`. The alias-free nonlinearity runs through `ops.filtered_lrelu` (NVIDIA's
reference semantics, no custom CUDA kernels), and the low-pass filters are designed with numpy/torch only,
so neither scipy nor a compiler is needed.

Every synthesis layer except the last two works on a canvas wider than the image: `margin_size` extra
samples on each side at that layer's sampling rate. `SynthesisNetwork.feature_margins()` tells callers how
many pixels to crop from each layer's feature map to get exactly the image area.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .generator import StyleGenerator
from .ops import FullyConnectedLayer, filtered_lrelu
from .precision import block_dtype
from .stylegan2 import MappingNetwork

NOISE_MODES = ("random", "const", "none")
GENERATOR_ARG_NAMES = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
DEFAULT_MAPPING_LAYERS = 2
DRAG_FEATURE_SAMPLING_RATE = 128


def _kaiser_beta(atten: float) -> float:
    """Kaiser window shape parameter for a stopband attenuation of `atten` dB (Kaiser's empirical formula)."""
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR filter, as StyleGAN3 designs its up/down-sampling filters.

    Separable: a windowed sinc with unit DC gain (what `scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs)`
    returns). Radial: a windowed 2D jinc, normalised to unit sum. `None` stands for the identity filter.
    """
    assert numtaps >= 1
    if numtaps == 1:
        return None
    nyquist = fs / 2
    atten = 2.285 * (numtaps - 1) * math.pi * (width / nyquist) + 7.95
    window = np.kaiser(numtaps, _kaiser_beta(atten))
    taps = np.arange(numtaps) - (numtaps - 1) / 2
    if not radial:
        rel_cutoff = cutoff / nyquist
        f = rel_cutoff * np.sinc(rel_cutoff * taps) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    x = taps / fs
    r = np.hypot(*np.meshgrid(x, x))
    j1 = torch.special.bessel_j1(torch.from_numpy(2 * math.pi * cutoff * r)).numpy()
    f = j1 / (math.pi * r) * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0, input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN3 modulated convolution: weights and styles are pre-normalised to unit mean square before
    modulation/demodulation, and `input_gain` rescales the input channels (1/RMS of the layer's input)."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert x.shape[1] == in_channels, (tuple(x.shape), tuple(weight.shape))
    assert styles.shape == (batch_size, in_channels), (tuple(styles.shape), batch_size, in_channels)
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, in_channels, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch_size, out_channels, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(batch_size, in_channels).reshape(batch_size, 1, in_channels, 1, 1)
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw)
    x = F.conv2d(x, w.to(x.dtype), padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])


class SynthesisInput(torch.nn.Module):
    """Fourier-feature input: sinusoids of fixed random frequencies, rotated and translated by an affine
    function of w[0] (and by the user `transform` buffer), sampled on a `size`×`size` grid."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = int(size)
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * self.bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # Start as the identity transform: rotation cos = 1, everything else 0.
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        assert w.ndim == 2 and w.shape[1] == self.w_dim, f"w must be [N, {self.w_dim}], got {tuple(w.shape)}"
        batch_size = w.shape[0]
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        cos, sin, tx, ty = t.unbind(dim=1)
        zero = torch.zeros_like(cos)
        one = torch.ones_like(cos)
        rotate = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).reshape(batch_size, 3, 3)
        translate = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(batch_size, 3, 3)
        transforms = rotate @ translate @ self.transform.unsqueeze(0)

        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        # Sample positions in image units (the image spans [-0.5, 0.5]); the canvas extends past it by the margin.
        coords = (torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5 - self.size / 2) / self.sampling_rate
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1)  # [H, W, xy]
        x = grid.unsqueeze(0) @ freqs.transpose(1, 2).unsqueeze(1)  # [N, H, W, C]
        x = x + phases.reshape(batch_size, 1, 1, -1)
        x = torch.sin(x * (2 * math.pi)) * amplitudes.reshape(batch_size, 1, 1, -1)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(torch.nn.Module):
    """Modulated convolution followed by the filtered leaky ReLU that resamples from the input to the output
    sampling rate (or, for the final ToRGB layer, a 1×1 modulated convolution without demodulation)."""

    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
                 in_channels: int, out_channels: int, in_size: int, out_size: int,
                 in_sampling_rate: int, out_sampling_rate: int, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False, conv_clamp: float | None = 256,
                 magnitude_ema_beta: float = 0.999) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.half_dtype: torch.dtype | None = None  # precision.py: None = float16 on CUDA only
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = in_size
        self.out_size = out_size
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta
        self.gain = 1.0 if is_torgb else math.sqrt(2.0)
        self.slope = 1.0 if is_torgb else 0.2

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(round(self.tmp_sampling_rate / in_sampling_rate))
        assert in_sampling_rate * self.up_factor == self.tmp_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            numtaps=self.up_taps, cutoff=in_cutoff, width=in_half_width * 2, fs=self.tmp_sampling_rate))

        self.down_factor = int(round(self.tmp_sampling_rate / out_sampling_rate))
        assert out_sampling_rate * self.down_factor == self.tmp_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            numtaps=self.down_taps, cutoff=out_cutoff, width=out_half_width * 2, fs=self.tmp_sampling_rate,
            radial=self.down_radial))

        # Pad the upsampled signal so that the output has `out_size` samples, centred as in the paper's
        # symmetric sample-position convention (StyleGAN3 appendix C.3).
        pad_total = (out_size - 1) * self.down_factor + 1
        pad_total -= (in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [pad_lo, pad_hi, pad_lo, pad_hi]

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"in_size={self.in_size}, out_size={self.out_size}, "
                f"in_sampling_rate={self.in_sampling_rate}, "
                f"out_sampling_rate={self.out_sampling_rate}, is_torgb={self.is_torgb}, "
                f"is_critically_sampled={self.is_critically_sampled}")

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                force_fp32: bool = False) -> torch.Tensor:
        assert noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}"
        assert x.ndim == 4 and x.shape[1:] == (self.in_channels, self.in_size, self.in_size), \
            f"expected [N, {self.in_channels}, {self.in_size}, {self.in_size}], got {tuple(x.shape)}"
        assert w.shape == (x.shape[0], self.w_dim), (tuple(w.shape), x.shape[0], self.w_dim)
        input_gain = self.magnitude_ema.rsqrt()
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))
        dtype = block_dtype(self.use_fp16, force_fp32, x.device, self.half_dtype)
        x = modulated_conv2d(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=input_gain)
        x = filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype), up=self.up_factor,
                           down=self.down_factor, padding=self.padding, gain=self.gain, slope=self.slope,
                           clamp=self.conv_clamp)
        assert x.shape[1:] == (self.out_channels, self.out_size, self.out_size) and x.dtype == dtype
        return x


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] → image; optionally the output of every layer (the maps DragGAN reads)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2, first_cutoff: float = 2,
                 first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3, margin_size: int = 10,
                 output_scale: float = 0.25, num_fp16_res: int = 4, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False, conv_clamp: float | None = 256,
                 magnitude_ema_beta: float = 0.999) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.img_height = img_resolution
        self.img_width = img_resolution
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Cutoffs and minimum stopbands grow geometrically from the first layer to the last
        # `num_critical` layers, which sit at the output resolution.
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=float(sampling_rates[0]), bandwidth=float(cutoffs[0]))
        self.layer_names: list[str] = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=(idx == num_layers), is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(sampling_rates[idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
                conv_kernel=conv_kernel, filter_size=filter_size, lrelu_upsampling=lrelu_upsampling,
                use_radial_filters=use_radial_filters, conv_clamp=conv_clamp, magnitude_ema_beta=magnitude_ema_beta)
            name = f"L{idx}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    @property
    def num_blocks(self) -> int:
        """Number of feature maps `return_features` gives: one per layer, ToRGB included."""
        return len(self.layer_names)

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, name) for name in self.layer_names]

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each layer's output tensor, margins included."""
        return [(layer.out_channels, layer.out_size, layer.out_size) for layer in self.layers()]

    def feature_margins(self) -> list[int]:
        """Pixels outside the image on each side of each layer's output: `feat[..., m:H - m, m:W - m]` covers
        exactly the image, sampled at the layer's sampling rate."""
        return [(layer.out_size - layer.out_sampling_rate) // 2 for layer in self.layers()]

    # The drag engine's forward passes (`generator.DragSynthesis`).

    def default_feature_block(self) -> int:
        """The layer DragGAN reads: StyleGAN2 DragGAN reads the 128×128 block; the StyleGAN3 counterpart is the
        deepest non-ToRGB layer whose sampling rate is at most 128 (layer 7 of a 512 model, layer 6 of a 1024
        model). Smaller models use their last non-ToRGB layer."""
        best = 0
        for idx, layer in enumerate(self.layers()[:-1]):
            if layer.out_sampling_rate <= DRAG_FEATURE_SAMPLING_RATE:
                best = idx
        return best

    def supports_windows(self, noise_mode: str) -> bool:
        """No: a layer's filtered up- and down-sampling (and its margin) is not computed on windows here."""
        return False

    def features(self, ws: torch.Tensor, block: int, box: Any = None, *, noise_mode: str = "const",
                 grad_layers: int | None = None, coarse: int | None = None
                 ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Layer `block`'s map of ws, margins cropped, float32 [C, h, w], whole (`box` must be None); origin
        (0, 0); layer `coarse`'s map when asked. See `generator.DragSynthesis`."""
        if box is not None:
            raise NotImplementedError("StyleGAN3 synthesis computes whole feature maps only (supports_windows)")
        feats = self(ws, until_block=block, noise_mode=noise_mode)
        margins = self.feature_margins()

        def inside(k: int) -> torch.Tensor:
            m = margins[k]
            return feats[k][0, :, m:feats[k].shape[2] - m, m:feats[k].shape[3] - m].to(torch.float32)

        return inside(block), (0, 0), None if coarse is None else inside(coarse)

    def direct_render_supported(self, device: torch.device) -> bool:
        """No: StyleGAN3 renders with `forward` everywhere."""
        return False

    def render_direct(self, ws: torch.Tensor, noise_mode: str = "const", preview: bool = False) -> torch.Tensor:
        raise NotImplementedError("StyleGAN3 has no direct render (direct_render_supported): use synthesis(ws)")

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """None: StyleGAN3 has no noise maps."""
        return {}

    def image_resolutions(self) -> list[int]:
        """The image heights `image_at` can stop at: only the full one (every layer works at its own sampling
        rate and only the last one makes an image)."""
        return [self.img_resolution]

    def image_at(self, ws: torch.Tensor, resolution: int, noise_mode: str = "random",
                 noise_bufs: dict[str, torch.Tensor] | None = None,
                 fused_modconv: bool | None = None) -> torch.Tensor:
        """`forward(ws)` (StyleGAN3 has no noise maps, so `noise_bufs` must be empty, and one modulated
        convolution form, so `fused_modconv` changes nothing); see StyleGAN2's."""
        assert resolution in self.image_resolutions() and not noise_bufs
        return self(ws, noise_mode=noise_mode)

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_layers={self.num_layers}, "
                f"num_critical={self.num_critical}, margin_size={self.margin_size}")

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", return_features: bool = False,
                until_block: int | None = None, force_fp32: bool = False):
        """Run the synthesis network.

        `noise_mode` is accepted for API compatibility with StyleGAN2 (StyleGAN3 has no noise inputs).
        `until_block=i` stops after layer i and returns only the features of layers 0..i (no image).
        """
        assert noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}"
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), \
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}"
        if until_block is not None:
            assert 0 <= until_block < self.num_blocks, f"until_block must be in [0, {self.num_blocks})"
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        features = []
        last = self.num_blocks - 1 if until_block is None else until_block
        for name, w in zip(self.layer_names[: last + 1], ws[1:]):
            x = getattr(self, name)(x, w, noise_mode=noise_mode, force_fp32=force_fp32)
            features.append(x)
        if until_block is not None:
            return features
        if self.output_scale != 1:
            x = x * self.output_scale
        img = x.to(torch.float32)
        assert img.shape[1:] == (self.img_channels, self.img_resolution, self.img_resolution)
        if return_features:
            return img, features
        return img


class Generator(StyleGenerator):
    """StyleGAN3 generator: `mapping` (z, c → ws) followed by `synthesis` (ws → image); `latent_from_seed`
    and `forward` come from `StyleGenerator`."""

    family = "stylegan3"

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, **synthesis_kwargs: Any) -> None:
        mapping_kwargs = dict(mapping_kwargs or {})
        super().__init__(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                              img_channels=img_channels, mapping_kwargs=mapping_kwargs, **synthesis_kwargs))
        self.img_height = img_resolution
        self.img_width = img_resolution
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **{"num_layers": DEFAULT_MAPPING_LAYERS, **mapping_kwargs})
