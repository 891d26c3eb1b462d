"""Range checks on generator constructor kwargs, run before any module is built from a file's settings.

A model file chooses the architecture it is built with; without checks `num_layers=1e7` never finishes
building and resolution 0 or NaN fails deep inside with `ZeroDivisionError` / `AssertionError`.
`check_generator_kwargs` accepts only JSON-plain values (nesting ≤ 4, lists ≤ 64 items, strings ≤ 64 chars,
finite numbers), a power-of-two resolution in [4, 2048], bounded dimensions and layer counts, and an
estimated parameter count of at most `MAX_PARAMS` (FFHQ-1024 StyleGAN2 has 30 M; the largest zoo model is
well below the limit). Every refusal is one `ModelFormatError` line naming the setting.
"""

from __future__ import annotations

import math
from typing import Any

from ..networks.ops import ACTIVATION_GAINS
from ..errors import ModelFormatError

MIN_RESOLUTION, MAX_RESOLUTION = 4, 2048
MAX_DIM = 4096
MAX_C_DIM = 10_000
MAX_MAPPING_LAYERS = 32
MAX_CHANNELS = 2048
MAX_SG3_LAYERS = 32
MAX_PARAMS = 300_000_000
_MAX_NESTING = 4
_MAX_LIST = 64
_MAX_STR = 64


def _plain_check(value: Any, where: str, depth: int = 0) -> None:
    if depth > _MAX_NESTING:
        raise ModelFormatError(f"generator setting {where} is nested too deeply")
    if isinstance(value, dict):
        if len(value) > _MAX_LIST:
            raise ModelFormatError(f"generator setting {where} has too many entries")
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > _MAX_STR:
                raise ModelFormatError(f"generator setting {where} has a malformed key")
            _plain_check(item, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST:
            raise ModelFormatError(f"generator setting {where} is a list of more than {_MAX_LIST} items")
        for item in value:
            _plain_check(item, where, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ModelFormatError(f"generator setting {where} is {value}, not a finite number")
    elif isinstance(value, int):
        if abs(value) > 2**31:
            raise ModelFormatError(f"generator setting {where} = {value} is out of range")
    elif isinstance(value, str):
        if len(value) > _MAX_STR:
            raise ModelFormatError(f"generator setting {where} is a string of {len(value)} characters")
    elif value is not None:
        raise ModelFormatError(f"generator setting {where} is a {type(value).__name__}")


def _int(kwargs: dict, name: str, lo: int, hi: int, default: Any = None, optional: bool = False) -> int | None:
    value = kwargs.get(name, default)
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelFormatError(f"generator setting {name} = {value!r:.40} is outside [{lo}, {hi}]")
    return value


def _num(kwargs: dict, name: str, lo: float, hi: float, default: Any = None, optional: bool = False) -> float | None:
    value = kwargs.get(name, default)
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= float(value) <= hi:
        raise ModelFormatError(f"generator setting {name} = {value!r:.40} is outside [{lo:g}, {hi:g}]")
    return float(value)


def _mapping_params(mapping: Any, z_dim: int, c_dim: int, w_dim: int) -> int:
    if not isinstance(mapping, dict):
        raise ModelFormatError("generator setting mapping_kwargs is not a dict")
    layers = _int(mapping, "num_layers", 1, MAX_MAPPING_LAYERS, default=8)
    embed = _int(mapping, "embed_features", 1, MAX_DIM, optional=True) or w_dim
    features = _int(mapping, "layer_features", 1, MAX_DIM, optional=True) or w_dim
    _num(mapping, "lr_multiplier", 1e-8, 1e3, default=0.01)
    _num(mapping, "w_avg_beta", 0.0, 1.0, optional=True)
    if mapping.get("activation", "lrelu") not in ACTIVATION_GAINS:
        raise ModelFormatError(f"generator setting mapping activation must be one of {sorted(ACTIVATION_GAINS)}")
    return c_dim * embed + (z_dim + embed) * features + (layers - 1) * features * features + features * w_dim


def _stylegan2_params(w_dim: int, resolution: int, synthesis: dict) -> int:
    channel_base = _int(synthesis, "channel_base", 1, 1 << 24, default=32768)
    channel_max = _int(synthesis, "channel_max", 1, MAX_CHANNELS, default=512)
    _int(synthesis, "num_fp16_res", 0, 16, default=0)
    _num(synthesis, "conv_clamp", 1e-6, 1e9, optional=True)
    if synthesis.get("activation", "lrelu") not in ACTIVATION_GAINS:
        raise ModelFormatError(f"generator setting activation must be one of {sorted(ACTIVATION_GAINS)}")
    resample = synthesis.get("resample_filter", [1, 3, 3, 1])
    if not isinstance(resample, (list, tuple)) or not 1 <= len(resample) <= 16:
        raise ModelFormatError("generator setting resample_filter must be a list of 1 to 16 numbers")
    params, prev = 0, 0
    for res in (2 ** i for i in range(2, resolution.bit_length())):
        ch = max(min(channel_base // res, channel_max), 1)
        params += 9 * (prev + ch) * ch + w_dim * (prev + ch + ch) + 3 * ch
        prev = ch
    return params


def _stylegan3_params(w_dim: int, synthesis: dict) -> int:
    _int(synthesis, "channel_base", 1, 1 << 24, default=32768)
    channel_max = _int(synthesis, "channel_max", 1, MAX_CHANNELS, default=512)
    num_layers = _int(synthesis, "num_layers", 1, MAX_SG3_LAYERS, default=14)
    _int(synthesis, "num_critical", 0, num_layers - 1, default=2)
    _num(synthesis, "first_cutoff", 1e-3, 1e4, default=2)
    _num(synthesis, "first_stopband", 1e-3, 1e4, default=2 ** 2.1)
    _num(synthesis, "last_stopband_rel", 1e-3, 1e3, default=2 ** 0.3)
    _int(synthesis, "margin_size", 0, 256, default=10)
    _num(synthesis, "output_scale", -1e6, 1e6, default=0.25)
    _int(synthesis, "num_fp16_res", 0, 16, default=4)
    kernel = _int(synthesis, "conv_kernel", 1, 7, default=3)
    _int(synthesis, "filter_size", 1, 16, default=6)
    _int(synthesis, "lrelu_upsampling", 1, 4, default=2)
    _num(synthesis, "conv_clamp", 1e-6, 1e9, default=256, optional=True)
    _num(synthesis, "magnitude_ema_beta", 0.0, 1.0, default=0.999)
    return (num_layers + 1) * (kernel * kernel * channel_max + w_dim) * channel_max


def check_generator_kwargs(family: str, kwargs: Any) -> None:
    """Raise `ModelFormatError` unless `kwargs` are sane constructor settings for a `family` generator."""
    if not isinstance(kwargs, dict):
        raise ModelFormatError("generator settings are not a dict")
    _plain_check(kwargs, "")
    z_dim = _int(kwargs, "z_dim", 1, MAX_DIM)
    c_dim = _int(kwargs, "c_dim", 0, MAX_C_DIM)
    w_dim = _int(kwargs, "w_dim", 1, MAX_DIM)
    resolution = _int(kwargs, "img_resolution", MIN_RESOLUTION, MAX_RESOLUTION)
    if resolution & (resolution - 1):
        raise ModelFormatError(f"generator setting img_resolution = {resolution} is not a power of two")
    _int(kwargs, "img_channels", 1, 4)
    params = _mapping_params(kwargs.get("mapping_kwargs") or {}, z_dim, c_dim, w_dim)
    if family == "stylegan2":
        synthesis = kwargs.get("synthesis_kwargs") or {}
        if not isinstance(synthesis, dict):
            raise ModelFormatError("generator setting synthesis_kwargs is not a dict")
        params += _stylegan2_params(w_dim, resolution, synthesis)
    elif family == "stylegan3":
        params += _stylegan3_params(w_dim, kwargs)
    else:
        raise ModelFormatError(f"unknown generator family {family!r:.40}")
    if params > MAX_PARAMS:
        raise ModelFormatError(f"generator settings describe about {params / 1e6:.0f} M parameters, more than "
                               f"this app builds ({MAX_PARAMS / 1e6:.0f} M)")
