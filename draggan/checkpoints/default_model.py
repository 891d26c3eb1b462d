"""Which model the app starts on: a setting first, else FFHQ-512 where it runs well, else the bundled model.

`default_model(env, device, hub_online, cached)` returns a model source:

1. `DRAGGAN_DEFAULT_MODEL` in `env` (any source `load_generator` accepts: a zoo key, a path, a Hub file),
   when set and not blank;
2. otherwise `ffhq-512` on a GPU — CUDA, or a ZeroGPU Space (`SPACES_ZERO_GPU` true, where CUDA appears only
   inside GPU-decorated calls) — when its file is cached or the Hub is reachable;
3. otherwise the bundled model (the registry's first local entry, `cartoon-faces-128`), which needs no download
   and stays usable on a 2-vCPU CPU Space.

`hub_online` and `cached` may be passed in (tests, or a caller that already knows); when None they are found
out here, the Hub probe (a few seconds at most) only when it can change the answer.
"""

from __future__ import annotations

import os
from typing import Mapping

import torch

DEFAULT_MODEL_ENV = "DRAGGAN_DEFAULT_MODEL"
GPU_DEFAULT_MODEL = "ffhq-512"
_TRUE = {"1", "t", "true", "yes", "on"}


def bundled_default(zoo_path: str | os.PathLike | None = None) -> str:
    """The key of the registry's first bundled (local) model."""
    from .zoo import list_models

    for entry in list_models(zoo_path):
        if entry.is_local:
            return entry.key
    raise ValueError("the model registry has no bundled model to fall back on")


def has_gpu(device: str | torch.device | None, env: Mapping[str, str]) -> bool:
    """Whether the app runs on a GPU: a CUDA `device`, or a ZeroGPU Space (`SPACES_ZERO_GPU` true)."""
    if str(env.get("SPACES_ZERO_GPU", "")).strip().lower() in _TRUE:
        return True
    return device is not None and torch.device(device).type == "cuda"


def default_model(env: Mapping[str, str] | None = None, device: str | torch.device | None = None,
                  hub_online: bool | None = None, cached: bool | None = None,
                  zoo_path: str | os.PathLike | None = None) -> str:
    """The model source the app starts on (see the module docstring for the rules); `env` defaults to
    `os.environ`, `device` to none (CPU)."""
    if env is None:
        from .. import settings
        env, chosen = os.environ, settings.get().default_model.strip()
    else:
        chosen = str(env.get(DEFAULT_MODEL_ENV, "")).strip()
    if chosen:
        return chosen
    if not has_gpu(device, env):
        return bundled_default(zoo_path)
    from . import hub
    from .zoo import get_model

    if cached is None:
        cached = hub.is_available_offline(get_model(GPU_DEFAULT_MODEL, zoo_path))
    if cached:
        return GPU_DEFAULT_MODEL
    if hub_online is None:
        hub_online = not hub.is_offline() and hub.hub_reachable()
    return GPU_DEFAULT_MODEL if hub_online else bundled_default(zoo_path)
