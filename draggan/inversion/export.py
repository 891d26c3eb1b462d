"""Save a tuned generator in the converted-model format, so every model loader reads it back.

The layout is the converted cache's (`draggan.checkpoints.cache`): weights as safetensors and a `config.json`
with `format_version`, `family` and `init_kwargs` in the same folder. `load_generator(folder)` (and
`python -m draggan ... --model folder`) rebuild it; a `.safetensors` path is loadable too, through the
`config.json` written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ..checkpoints import cache


def save_tuned_generator(G: torch.nn.Module, path: str | Path, note: dict[str, Any] | None = None) -> Path:
    """Write `G` to `path` and return the weights file.

    `path` ending in `.safetensors` names the weights file (the config goes to `config.json` beside it; an
    existing one must describe the same architecture); any other path is a folder that receives
    `model.safetensors` + `config.json`. `note` adds JSON-able provenance (e.g. the source model) to the config.
    """
    path = Path(path)
    weights = path if path.suffix == ".safetensors" else path / cache.WEIGHTS_FILE
    config_path = weights.parent / cache.CONFIG_FILE
    config = dict(format_version=cache.FORMAT_VERSION, family=G.family, init_kwargs=G.init_kwargs,
                  source="inversion (pivotal tuning)", **(note or {}))
    if config_path.is_file():
        existing = cache.read_config(weights.parent)
        if (existing["family"], existing["init_kwargs"]) != (config["family"], json.loads(json.dumps(G.init_kwargs))):
            raise ValueError(f"{config_path} describes a different architecture; save to another folder")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().to("cpu").contiguous() for name, t in G.state_dict().items()}
    safetensors.torch.save_file(state, str(weights), metadata=cache.config_metadata(config))
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return weights
