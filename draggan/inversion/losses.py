"""Reconstruction losses for GAN inversion: LPIPS-VGG16 with Hub weights, or a pixel/multi-scale fallback.

LPIPS (Zhang et al., 2018) compares channel-normalised VGG16 activations at five depths, weighting each
channel with a learned linear head. Our VGG16 is a small feature extractor whose module indices match
torchvision's `vgg16().features`, so the published backbone weights load by name. When the weights cannot be
downloaded (offline, Hub unreachable) `make_loss('auto')` falls back to `multiscale_pixel_loss` and says why.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoints.hub import HubRef, fetch_from_hub
from .config import InversionConfig

# torchvision's VGG16 'D' configuration up to relu5_3; 'M' = 2×2 max pooling.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, the activations LPIPS compares.
_LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' input normalisation for images in [-1, 1] (ImageNet mean/std expressed in that range).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)

LPIPS_NAME = "lpips-vgg16"
PIXEL_NAME = "pixel+multiscale"


class VGG16Features(torch.nn.Module):
    """VGG16 convolutional trunk up to relu5_3, returning the five activations LPIPS uses."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        in_channels = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [torch.nn.Conv2d(in_channels, item, kernel_size=3, padding=1), torch.nn.ReLU()]
                in_channels = item
        self.features = torch.nn.Sequential(*layers)
        assert len(self.features) == _LPIPS_TAPS[-1] + 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in _LPIPS_TAPS:
                out.append(x)
        return out


class LPIPS(torch.nn.Module):
    """LPIPS distance between two image batches in [-1, 1]; returns one value per pair, shape [N]."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        for i, channels in enumerate(LPIPS_CHANNELS):
            self.register_buffer(f"lin{i}", torch.zeros([1, channels, 1, 1]))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised VGG16 activations of `x` ([N, 3, H, W] in [-1, 1]) that LPIPS compares."""
        assert x.ndim == 4 and x.shape[1] == 3, f"LPIPS needs an [N, 3, H, W] batch, got {tuple(x.shape)}"
        return [f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                for f in self.vgg(x.sub(self.shift).div(self.scale))]

    def distance(self, a: torch.Tensor, b_features: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between `a` and an image whose `features` are given: an inversion computes its target's once."""
        total = a.new_zeros([a.shape[0]])
        for i, (fa, fb) in enumerate(zip(self.features(a), b_features, strict=True)):
            assert fa.shape[1:] == fb.shape[1:], f"LPIPS features differ: {tuple(fa.shape)} vs {tuple(fb.shape)}"
            total = total + ((fa - fb).square() * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert a.shape == b.shape, f"LPIPS needs two equal batches, got {tuple(a.shape)} and {tuple(b.shape)}"
        return self.distance(a, self.features(b))


def _lpips_head_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a linear-head file's keys (`lin0.model.1.weight`, `lins.0.…weight`, …) to ours (`lin0`…`lin4`)."""
    heads: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        match = re.match(r"^(?:.*\.)?lins?\.?(\d)\..*weight$", key)
        if match is None:
            continue
        i = int(match.group(1))
        expected = (1, LPIPS_CHANNELS[i], 1, 1) if i < len(LPIPS_CHANNELS) else None
        if expected is None or tuple(value.shape) != expected:
            raise ValueError(f"LPIPS head {key!r} has shape {tuple(value.shape)}, expected {expected}")
        heads[f"lin{i}"] = value.to(torch.float32)
    if sorted(heads) != [f"lin{i}" for i in range(len(LPIPS_CHANNELS))]:
        raise ValueError(f"LPIPS head file must hold 5 linear heads, found {sorted(heads)} in {sorted(raw)}")
    return heads


def _read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat tensor dict from a .safetensors file or a weights-only torch file (never arbitrary pickles)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} does not hold a flat dict of tensors")
    return state


def load_lpips(vgg16_path: str | Path, lpips_path: str | Path) -> LPIPS:
    """Build LPIPS from a VGG16 backbone file (keys `features.N.*`) and an LPIPS linear-head file."""
    backbone = {k: v.to(torch.float32) for k, v in _read_tensors(vgg16_path).items() if k.startswith("features.")}
    model = LPIPS()
    state = {f"vgg.{k}": v for k, v in backbone.items()}
    state.update(_lpips_head_state(_read_tensors(lpips_path)))
    state["shift"] = model.shift
    state["scale"] = model.scale
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=4)
def _cached_lpips(vgg16_path: str, lpips_path: str, device: str) -> LPIPS:
    return load_lpips(vgg16_path, lpips_path).to(device)


def download_lpips(config: InversionConfig, device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS with weights from the Hub, through the models' download path (same cache, quick offline failure).

    Raises when the files cannot be had. The loaded network is read-only and shared by every caller.
    """
    vgg16_path = fetch_from_hub(HubRef(config.vgg16_repo, config.vgg16_file, config.vgg16_revision))
    lpips_path = fetch_from_hub(HubRef(config.lpips_repo, config.lpips_file, config.lpips_revision))
    return _cached_lpips(str(vgg16_path), str(lpips_path), str(torch.device(device)))


def downsample_to(img: torch.Tensor, max_size: int) -> torch.Tensor:
    """Area-downsample by an integer factor so that neither side exceeds `max_size` (NVIDIA's projector)."""
    factor = -(-max(img.shape[2], img.shape[3]) // max_size)
    return F.avg_pool2d(img, factor) if factor > 1 else img


def multiscale_pixel_loss(a: torch.Tensor, b: torch.Tensor, min_size: int = 8) -> torch.Tensor:
    """Fallback reconstruction loss: mean L2 + L1 at full resolution and at each 2× area-downsampled level.

    The coarse levels weigh low-frequency structure (layout, colour) more than a single pixel loss does,
    which is what a perceptual loss mostly buys in the early projection steps. Returns one value per pair.
    """
    assert a.shape == b.shape and a.ndim == 4, f"need equal NCHW batches, got {tuple(a.shape)}, {tuple(b.shape)}"
    total = a.new_zeros([a.shape[0]])
    diff = a - b
    while True:
        total = total + diff.square().mean(dim=(1, 2, 3)) + diff.abs().mean(dim=(1, 2, 3))
        if min(diff.shape[2], diff.shape[3]) < 2 * min_size:
            return total
        diff = F.avg_pool2d(diff, 2)


def saturation_matched(synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`synth` with pixels that overshoot a target clipped at the same bound (±1) replaced by the target.

    A photo stores pure white or black wherever the scene was at least that bright or dark, and generators
    overshoot [-1, 1]; what the user sees is the clipped image, so such pixels already match and should not
    pull the latent. Overshoots where the target is not clipped are left alone and still penalised.
    """
    saturated = ((synth > 1) & (target >= 1)) | ((synth < -1) & (target <= -1))
    return torch.where(saturated, target, synth)


class TargetCachedLPIPS:
    """LPIPS of images area-downsampled to at most `size`, computing a target's features once.

    Every step of an inversion stage compares a new image with the same target; running VGG16 on the target
    at each step doubled the loss's cost (a 512-px photo's projection step on a CPU thread: 3.2 s, not 1.9).
    The cache holds the last target tensor seen (by identity and in-place version) that needs no gradient.
    """

    def __init__(self, lpips: LPIPS, size: int) -> None:
        self.lpips, self.size = lpips, size
        self._target: torch.Tensor | None = None
        self._version = -1
        self._features: list[torch.Tensor] = []

    def __call__(self, synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.requires_grad:
            return self.lpips(downsample_to(synth, self.size), downsample_to(target, self.size))
        if self._target is not target or self._version != target._version:
            with torch.no_grad():
                self._features = self.lpips.features(downsample_to(target, self.size))
            self._target, self._version = target, target._version
        return self.lpips.distance(downsample_to(synth, self.size), self._features)


@dataclasses.dataclass
class ReconstructionLoss:
    """The loss an inversion optimises: `fn(synth, target)` → per-image values; `lpips` when available."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    lpips: LPIPS | None
    note: str | None = None               # why the fallback was used, for the UI

    def __call__(self, synth: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(saturation_matched(synth, target), target).mean()


def make_loss(config: InversionConfig, device: torch.device | str = "cpu") -> ReconstructionLoss:
    """The configured loss: 'lpips' (must load), 'pixel', or 'auto' (LPIPS, else the documented fallback)."""
    if config.loss == "pixel":
        return ReconstructionLoss(PIXEL_NAME, multiscale_pixel_loss, None, "pixel loss requested")
    try:
        lpips = download_lpips(config, device)
    except Exception as exc:  # any download/parse failure means "no LPIPS"; the reason is reported
        if config.loss == "lpips":
            raise RuntimeError(f"LPIPS weights unavailable: {exc}") from exc
        reason = str(exc).split(". ")[0].rstrip(".") or type(exc).__name__
        note = f"LPIPS weights unavailable ({reason}); using the pixel + multi-scale loss"
        return ReconstructionLoss(PIXEL_NAME, multiscale_pixel_loss, None, note)

    return ReconstructionLoss(LPIPS_NAME, TargetCachedLPIPS(lpips, config.loss_max_size), lpips, None)
