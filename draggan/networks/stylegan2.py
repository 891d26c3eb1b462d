"""StyleGAN2 generator (NVIDIA `stylegan2-ada-pytorch` / `networks_stylegan2` flavour) in pure PyTorch.

Module and parameter names match NVIDIA's, so a network pickle's tensors load by name with
`load_state_dict(strict=True)`. Non-square StyleGAN-Human models (height = 2 × width) are supported
through `square=False`, as in the StyleGAN-Human code the official DragGAN uses for them.
"""

from __future__ import annotations

from typing import Any

import torch

from . import stylegan2_render
from .generator import Box, StyleGenerator
from .ops import (ACTIVATION_GAINS, FullyConnectedLayer, bias_act, modulated_conv2d, normalize_2nd_moment,
                  setup_filter, upsample2d)
from .precision import block_dtype
from .stylegan2_window import block_margin, windowed_features

NOISE_MODES = ("random", "const", "none")


class MappingNetwork(torch.nn.Module):
    """z (+ label c) → w, broadcast to `num_ws` layers, with truncation towards `w_avg`, the moving average of
    w that this module keeps up to date while training (`update_emas=True`)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.998) -> None:
        super().__init__()
        self.z_dim = z_dim                # latent z size (0: label-only)
        self.c_dim = c_dim                # label size (0: unconditional)
        self.w_dim = w_dim                # w size
        self.num_ws = num_ws              # layers w is broadcast to (None: return [N, w_dim])
        self.num_layers = num_layers      # fully connected layers
        self.w_avg_beta = w_avg_beta      # decay of w_avg's moving average (None: no w_avg)
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, "
                f"num_ws={self.num_ws}, w_avg_beta={self.w_avg_beta}")

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]); `update_emas`: move `w_avg` towards this batch's mean w."""
        x = None
        if self.z_dim > 0:
            assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}], got {tuple(z.shape)}"
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c is not None and c.shape[-1] == self.c_dim, f"this model needs a label c of size {self.c_dim}"
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().mean(dim=0), 1 - self.w_avg_beta)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(torch.nn.Module):
    """Modulated 3×3 convolution (optionally 2× up), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter: tuple = (1, 3, 3, 1), conv_clamp: float | None = None,
                 channels_last: bool = False, square: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.width = resolution if square else resolution // 2
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATION_GAINS[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, self.width]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self._demod_cache: tuple[tuple, torch.Tensor] | None = None

    def demodulation_sums(self) -> torch.Tensor:
        """Σ_k weight[o, i, k]² as [I, O] (what the unfused demodulation multiplies the squared styles by),
        cached while the weight keeps its storage and version and needs no gradient: every drag step would
        otherwise recompute it for every layer (~18 % of a 512 step on CPU)."""
        weight = self.weight
        if (weight.requires_grad and torch.is_grad_enabled()) or weight.is_inference():
            return weight.square().sum(dim=[2, 3]).t()   # (inference tensors keep no version to key on)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self._demod_cache
        if cached is None or cached[0] != key:
            cached = self._demod_cache = (key, weight.detach().square().sum(dim=[2, 3]).t())
        return cached[1]

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
                gain: float = 1.0, noise_const: torch.Tensor | None = None) -> torch.Tensor:
        """`noise_const` replaces the `noise_const` buffer in 'const' mode without touching the module; it may
        also be a window of it matching a spatially windowed `x` (the drag engine runs blocks on windows)."""
        assert noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}"
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.width], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == "const":
            const = self.noise_const if noise_const is None else noise_const
            assert const.ndim == 2 and all(c <= f for c, f in zip(const.shape, self.noise_const.shape)), \
                f"noise_const must be {tuple(self.noise_const.shape)} or a window of it, got {tuple(const.shape)}"
            noise = const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv,
                             weight_sq=None if fused_modconv else self.demodulation_sums())
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1×1 convolution to RGB, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / (in_channels * kernel_size ** 2) ** 0.5

    def extra_repr(self) -> str:
        return f"in_channels={self.weight.shape[1]}, out_channels={self.weight.shape[0]}"

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const |  2× up conv) + conv + ToRGB ('skip' architecture)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = "skip", resample_filter: tuple = (1, 3, 3, 1),
                 conv_clamp: float | None = None, use_fp16: bool = False, fp16_channels_last: bool = False,
                 fused_modconv_default: bool = True, square: bool = True, **layer_kwargs: Any) -> None:
        super().__init__()
        if architecture not in ("skip", "orig"):
            raise ValueError(f"synthesis architecture {architecture!r} is not supported (only 'skip' and 'orig')")
        self.in_channels = in_channels
        self.resolution = resolution
        self.width = resolution if square else resolution // 2
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.half_dtype: torch.dtype | None = None  # precision.py: None = float16 on CUDA only
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, self.width]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, square=square,
                                        **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, square=square, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, architecture={self.architecture}, "
                f"num_conv={self.num_conv}, num_torgb={self.num_torgb}, use_fp16={self.use_fp16}")

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "random",
                fused_modconv: bool | None = None, force_fp32: bool = False, skip_rgb: bool = False,
                noise_bufs: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        w_iter = iter(ws.unbind(dim=1))
        noise_bufs = noise_bufs or {}
        dtype = block_dtype(self.use_fp16, force_fp32, ws.device, self.half_dtype)
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           noise_const=noise_bufs.get("conv1"))
        else:
            assert x is not None and x.shape[1] == self.in_channels
            x = x.to(dtype=dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           noise_const=noise_bufs.get("conv0"))
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv,
                           noise_const=noise_bufs.get("conv1"))
        if skip_rgb:
            return x, img
        if img is not None and self.architecture == "skip":
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
            img = img + y if (img is not None and self.architecture == "skip") else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] → image [N, C, H, W]; optionally the per-block feature maps DragGAN reads."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, square: bool = True, **block_kwargs: Any) -> None:
        super().__init__()
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.img_height = img_resolution
        self.img_width = img_resolution if square else img_resolution // 2
        log2 = img_resolution.bit_length() - 1
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution), square=square, **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)
        self._window_margins: dict[int, int] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.block_resolutions)

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of each block's output, in `return_features` order."""
        out = []
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            out.append((block.conv1.out_channels, res, block.width))
        return out

    def feature_margins(self) -> list[int]:
        """Pixels outside the image on each side of each block's output: none (StyleGAN3's have margins)."""
        return [0] * len(self.block_resolutions)

    # The drag engine's forward passes (`generator.DragSynthesis`).

    def default_feature_block(self) -> int:
        """Block 5 (128 × 128 in a 512 model, as the official DragGAN), or the last block below full resolution
        for models with fewer blocks."""
        return 5 if self.num_blocks >= 6 else max(self.num_blocks - 2, 0)

    def supports_windows(self, noise_mode: str) -> bool:
        """Every operation of a block is local (`stylegan2_window.py`); windows need deterministic noise."""
        return noise_mode in ("const", "none")

    def window_margin(self, block: int) -> int:
        """Output pixels at each side of block `block`'s windowed output that the window's edge corrupts
        (`stylegan2_window.block_margin`, cached; 0 for the first block, which always runs whole)."""
        if block not in self._window_margins:
            self._window_margins[block] = 0 if block == 0 else \
                block_margin(getattr(self, f"b{self.block_resolutions[block]}"))
        return self._window_margins[block]

    def features(self, ws: torch.Tensor, block: int, box: Box | None = None, *, noise_mode: str = "const",
                 grad_layers: int | None = None, coarse: int | None = None
                 ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """Block `block`'s map of ws, float32 [C, h, w], on the window `box` (`stylegan2_window.py`) or, with
        None, whole by `forward(until_block=block, fused_modconv=False)`; its origin; block `coarse`'s whole
        map when asked. See `generator.DragSynthesis`."""
        if box is not None:
            assert self.supports_windows(noise_mode), f"windows need 'const' or 'none' noise, not {noise_mode!r}"
            return windowed_features(self, ws, block, box, noise_mode, grad_layers, coarse)
        feats = self(ws, until_block=block, noise_mode=noise_mode, fused_modconv=False)
        return feats[-1][0].to(torch.float32), (0, 0), None if coarse is None else feats[coarse][0].to(torch.float32)

    def direct_render_supported(self, device: torch.device) -> bool:
        """On a CPU the direct render (`stylegan2_render.py`) takes about half the time of `forward`."""
        return torch.device(device).type == "cpu"

    def render_direct(self, ws: torch.Tensor, noise_mode: str = "const", preview: bool = False,
                      half_top: bool | None = None) -> torch.Tensor:
        """The image of ws [1, num_ws, w_dim] by `stylegan2_render.render`: exact in float32, or the preview."""
        return stylegan2_render.render(self, ws, noise_mode, preview, half_top)

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """The constant-noise maps, by the name `forward(noise_bufs=…)` takes, and their shapes."""
        return {name: tuple(buf.shape) for name, buf in self.named_buffers() if name.endswith("noise_const")}

    def image_resolutions(self) -> list[int]:
        """The image heights `image_at` can stop at: every block's with the skip architecture (each block adds
        its ToRGB output to the upsampled image of the block below, so that image is the picture so far at
        its resolution), else only the full one."""
        if getattr(self, f"b{self.img_resolution}").architecture == "skip":
            return list(self.block_resolutions)
        return [self.img_resolution]

    def image_at(self, ws: torch.Tensor, resolution: int, noise_mode: str = "random",
                 noise_bufs: dict[str, torch.Tensor] | None = None,
                 fused_modconv: bool | None = None) -> torch.Tensor:
        """The image as it stands after the block of `resolution` (one of `image_resolutions()`), without
        running the blocks above: at the full resolution, `forward(ws)`; below it, the skip image those
        blocks would upsample and add detail to. What a loss that sees no more than `resolution` pixels
        needs, at a fraction of the cost (GAN inversion projects against it). `ws` is the full latent;
        `fused_modconv` as in `forward` (False: gradients reach the styles without per-sample weight
        gradients, the cheaper backward when only the latent is optimised)."""
        assert resolution in self.image_resolutions(), \
            f"this network can stop at {self.image_resolutions()} px, not {resolution}"
        return self(ws, noise_mode=noise_mode, noise_bufs=noise_bufs, fused_modconv=fused_modconv,
                    last_block=self.block_resolutions.index(resolution))

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_width={self.img_width}, img_channels={self.img_channels}")

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", return_features: bool = False,
                until_block: int | None = None, fused_modconv: bool | None = None, force_fp32: bool = False,
                noise_bufs: dict[str, torch.Tensor] | None = None, last_block: int | None = None):
        """Run the synthesis network.

        `until_block=i` stops after block i and returns only the features up to it (no image): the drag
        optimisation needs nothing past its feature block. `last_block=i` stops after block i too but
        returns its image (`image_at`). `noise_bufs` maps buffer names as listed by `named_buffers()` (e.g.
        'b8.conv0.noise_const') to tensors used instead of those buffers in 'const' mode, so a caller (GAN
        inversion) can optimise its own noise without mutating a shared network.
        """
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), \
            f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}"
        assert until_block is None or last_block is None, "until_block returns features, last_block an image"
        ws = ws.to(torch.float32)
        per_block: dict[str, dict[str, torch.Tensor]] = {}
        for name, tensor in (noise_bufs or {}).items():
            block_name, layer_name, buf_name = name.split(".")
            assert buf_name == "noise_const" and hasattr(self, block_name), f"unknown noise buffer {name!r}"
            per_block.setdefault(block_name, {})[layer_name] = tensor
        x = img = None
        features = []
        w_idx = 0
        last = until_block if until_block is not None else last_block if last_block is not None else \
            self.num_blocks - 1
        for i, res in enumerate(self.block_resolutions[: last + 1]):
            block = getattr(self, f"b{res}")
            cur_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur_ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                           force_fp32=force_fp32, skip_rgb=until_block is not None,
                           noise_bufs=per_block.get(f"b{res}"))
            features.append(x)
        if until_block is not None:
            return features
        if return_features:
            return img, features
        return img


class Generator(StyleGenerator):
    """StyleGAN2 generator: `mapping` (z, c → ws) followed by `synthesis` (ws → image); `latent_from_seed`
    and `forward` come from `StyleGenerator`."""

    family = "stylegan2"

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None) -> None:
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        super().__init__(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                              img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                              synthesis_kwargs=synthesis_kwargs))
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.img_height = self.synthesis.img_height
        self.img_width = self.synthesis.img_width
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
