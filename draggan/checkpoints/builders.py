"""Build our generator modules from an architecture family name and NVIDIA-style constructor kwargs.

Both the pickle path and the safetensors cache go through `build_generator`, so a cached model is rebuilt
exactly the way it was first built from its pickle, and every set of settings a file supplies is
range-checked (`generator_limits`) before a module is built from it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..networks import stylegan2
from ..errors import ModelFormatError
from .generator_limits import check_generator_kwargs
from .nvidia_pickle import PersistentObject

FAMILIES = ("stylegan2", "stylegan3")


def build_generator(family: str, init_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a generator of `family` ('stylegan2' | 'stylegan3') from its kwargs, in eval mode.

    Weights are random until a state dict is loaded into it. Raises `ModelFormatError` for settings outside
    `generator_limits`.
    """
    if family not in FAMILIES:
        raise ModelFormatError(f"unknown generator family {family!r:.40}; expected one of {FAMILIES}")
    check_generator_kwargs(family, init_kwargs)
    kwargs = copy.deepcopy(init_kwargs)
    if family == "stylegan2":
        return stylegan2.Generator(**kwargs).eval()
    from ..networks import stylegan3
    return stylegan3.Generator(**kwargs).eval()


def _plain(value: Any) -> Any:
    """Convert EasyDicts, tuples and numpy scalars from a pickle into JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def detect_family(G: PersistentObject) -> str:
    """Tell StyleGAN2 from StyleGAN3 by the synthesis network's children, never by file name."""
    synthesis = G.child("synthesis")
    children = synthesis.children
    if "input" in children and getattr(children["input"], "class_name", "") == "SynthesisInput":
        return "stylegan3"
    if "b4" in children and getattr(children["b4"], "class_name", "") == "SynthesisBlock":
        return "stylegan2"
    raise ValueError(f"unrecognised generator architecture (synthesis children: {sorted(children)})")


def stylegan2_kwargs(G: PersistentObject) -> dict[str, Any]:
    """Normalise a StyleGAN2 Generator's pickled constructor arguments to our `stylegan2.Generator`'s."""
    kw = _plain(G.init_kwargs)
    names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    for name, value in zip(names, _plain(list(G.init_args))):
        kw.setdefault(name, value)
    synthesis_kwargs = dict(kw.pop("synthesis_kwargs", {}) or {})
    mapping_kwargs = dict(kw.pop("mapping_kwargs", {}) or {})
    kw.pop("resize", None)
    kw.pop("padding", None)
    for key in list(kw):
        if key not in names:
            synthesis_kwargs.setdefault(key, kw.pop(key))
    const = G.child("synthesis").child("b4").state["_parameters"]["const"]
    if const.shape[1] != const.shape[2]:
        synthesis_kwargs["square"] = False
    return dict(**{k: kw[k] for k in names}, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)


def stylegan3_kwargs(G: PersistentObject) -> dict[str, Any]:
    """Normalise a pickled NVIDIA StyleGAN3 `Generator`'s constructor arguments to our `stylegan3.Generator`'s
    (positional arguments named, EasyDicts and numpy scalars made plain, so the result is JSON-able)."""
    from ..networks.stylegan3 import GENERATOR_ARG_NAMES

    kw = _plain(G.init_kwargs)
    for name, value in zip(GENERATOR_ARG_NAMES, _plain(list(G.init_args))):
        assert name not in kw, f"{name} given both positionally and by keyword"
        kw[name] = value
    missing = [name for name in GENERATOR_ARG_NAMES[:5] if name not in kw]
    if missing:
        raise ValueError(f"StyleGAN3 pickle lacks generator arguments {missing}")
    kw["mapping_kwargs"] = dict(kw.get("mapping_kwargs") or {})
    return kw


def generator_from_persistent(G: PersistentObject) -> torch.nn.Module:
    """Build our generator from a pickled NVIDIA `Generator` object and load its weights by name."""
    family = detect_family(G)
    kwargs = stylegan2_kwargs(G) if family == "stylegan2" else stylegan3_kwargs(G)
    net = build_generator(family, kwargs)
    net.load_state_dict(G.tensors(), strict=True)
    return net.eval().requires_grad_(False)
