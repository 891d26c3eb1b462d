"""Build our generator modules: from a family name and constructor kwargs, or from what a model file holds.

Every reader of a model file (a converted model folder, an NVIDIA or TF network pickle) hands over the same
plain description: a config `{"format_version", "family", "init_kwargs"}` (the converted-model config of
`generator_config`) and the tensors by name. `generator_from_state` turns it into a module in one place, so
a cached model is rebuilt exactly the way it was first built from its pickle: the config is checked, the
settings are range-checked once (`generator_limits`), the module is built without drawing random weights
and the tensors are assigned by name (`load_state_dict(strict=True, assign=True)`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..networks import stylegan2
from ..errors import ModelFormatError
from .generator_limits import check_generator_kwargs

FAMILIES = ("stylegan2", "stylegan3")
FORMAT_VERSION = 1


def _instantiate(family: str, init_kwargs: dict[str, Any]) -> torch.nn.Module:
    """The module of `family` built from (a copy of) `init_kwargs`, in eval mode; no checks."""
    kwargs = copy.deepcopy(init_kwargs)
    if family == "stylegan2":
        return stylegan2.Generator(**kwargs).eval()
    from ..networks import stylegan3
    return stylegan3.Generator(**kwargs).eval()


def build_generator(family: str, init_kwargs: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a generator of `family` ('stylegan2' | 'stylegan3') from its kwargs, in eval mode.

    Weights are random until a state dict is loaded into it. Raises `ModelFormatError` for settings outside
    `generator_limits`.
    """
    if family not in FAMILIES:
        raise ModelFormatError(f"unknown generator family {family!r:.40}; expected one of {FAMILIES}")
    check_generator_kwargs(family, init_kwargs)
    return _instantiate(family, init_kwargs)


def generator_config(G: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds `G` with `generator_from_state`: `format_version`, `family`, `init_kwargs` (JSON-normalised)."""
    return dict(format_version=FORMAT_VERSION, family=G.family,
                init_kwargs=json.loads(json.dumps(G.init_kwargs)))


def validate_config(config: Any, where: str) -> dict[str, Any]:
    """`config` if it is a converted-model config (format version, family, init_kwargs dict), else
    `ModelFormatError` naming `where`."""
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{where}: not a format_version {FORMAT_VERSION} converted-model config")
    if config.get("family") not in FAMILIES or not isinstance(config.get("init_kwargs"), dict):
        raise ModelFormatError(f"{where}: missing or invalid 'family' / 'init_kwargs' in the model config")
    return config


def exception_line(e: BaseException) -> str:
    """`Type: message` of an exception in at most one short line (messages may quote file contents)."""
    text = " ".join(str(e).split()) if all(isinstance(a, str) for a in e.args) else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _SkipRandomInit(TorchFunctionMode):
    """Inside the block, `torch.randn` / `torch.rand` return uninitialised tensors of the requested shape.

    Drawing random initial weights is most of the time spent building a 512 model, and wasted when every
    tensor is replaced right after by `load_state_dict(strict=True, assign=True)`. Assigning the file's
    tensors (for safetensors, copy-on-write memory maps of the file) instead of copying them spares another
    pass over the weights; pages are read on first use, and writes to them never reach the file.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.randn or func is torch.rand:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def _load(G: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Assign `state` to `G` by name (strict), each tensor in the dtype of the one it replaces."""
    own = G.state_dict()
    G.load_state_dict({name: t.to(own[name].dtype) if name in own and t.dtype != own[name].dtype else t
                       for name, t in state.items()}, strict=True, assign=True)


def generator_from_state(config: Any, state: Mapping[str, torch.Tensor], name: str) -> torch.nn.Module:
    """Our generator (eval mode, no grads) from a model file's config and tensors; `name` is what messages call
    the file. Every failure is one `ModelFormatError` line.

    Tensors the file does not hold (non-persistent buffers) keep their normal initial values: the module is
    then built again with random initialisation before the file's tensors are assigned.
    """
    config = validate_config(config, name)
    family, init_kwargs = config["family"], config["init_kwargs"]
    try:
        check_generator_kwargs(family, init_kwargs)
        with _SkipRandomInit():
            G = _instantiate(family, init_kwargs)
        if {key for key, _ in [*G.named_parameters(), *G.named_buffers()]} - set(state):
            G = _instantiate(family, init_kwargs)
        _load(G, state)
    except ModelFormatError as e:
        raise ModelFormatError(f"{name}: {e}") from None
    except Exception as e:  # any other failure of a hostile or broken file is a format error, in one line
        raise ModelFormatError(f"{name}: cannot build a generator from its weights and config "
                               f"({exception_line(e)})") from None
    return G.eval().requires_grad_(False)
