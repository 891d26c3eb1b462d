"""Which model the app starts on: a setting first, else FFHQ-512 where it can be had, else the bundled model.

`default_model(env, hub_online, cached)` returns a model source:

1. `DRAGGAN_DEFAULT_MODEL` in `env` (any source `load_generator` accepts: a zoo key, a path, a Hub file),
   when set and not blank;
2. otherwise `ffhq-512` on every tier — a GPU, a ZeroGPU Space, and the free 2-vCPU CPU hardware too, where
   a drag step at 512 takes a fraction of a second (the page states a drag's cost there before Start) — when
   its file is cached (as the Space card's `preload_from_hub` does) or the Hub is reachable;
3. otherwise the bundled model (the registry's first local entry, `cartoon-faces-128`), which needs no download.

`hub_online` and `cached` may be passed in (tests, or a caller that already knows); when None they are found
out here, the Hub probe (a few seconds at most) only when it can change the answer.
"""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_MODEL_ENV = "DRAGGAN_DEFAULT_MODEL"
HUB_DEFAULT_MODEL = "ffhq-512"


def bundled_default(zoo_path: str | os.PathLike | None = None) -> str | None:
    """The key of the registry's first bundled (local) model (None: it has none)."""
    from .zoo import list_models

    return next((entry.key for entry in list_models(zoo_path) if entry.is_local), None)


def default_model(env: Mapping[str, str] | None = None, hub_online: bool | None = None, cached: bool | None = None,
                  zoo_path: str | os.PathLike | None = None) -> str:
    """The model source the app starts on (see the module docstring for the rules); `env` defaults to the
    process's settings (one reader of `DRAGGAN_DEFAULT_MODEL`: `draggan.settings`)."""
    from .. import settings

    chosen = (settings.get() if env is None else settings.Settings.from_env(env)).default_model.strip()
    if chosen:
        return chosen
    from . import hub
    from .zoo import get_model

    if cached is None:
        cached = hub.is_available_offline(get_model(HUB_DEFAULT_MODEL, zoo_path))
    if cached:
        return HUB_DEFAULT_MODEL
    if hub_online is None:
        hub_online = not hub.is_offline() and hub.hub_reachable()
    return HUB_DEFAULT_MODEL if hub_online else (bundled_default(zoo_path) or HUB_DEFAULT_MODEL)
