"""Save a tuned generator in the converted-model format, so every model loader reads it back.

The layout is the converted cache's (`draggan.checkpoints.loader.save_converted`, a model folder of
`draggan.checkpoints.model_folder`): weights as safetensors and a `config.json` with `format_version`,
`family` and `init_kwargs`, also embedded in the weights file. `load_generator(folder)` (and
`python -m draggan ... --model folder`) rebuild it; a `.safetensors` path is loadable too, on its own or
through the `config.json` written beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoints import model_folder
from ..checkpoints.builders import generator_config
from ..checkpoints.loader import read_config, save_converted


def save_tuned_generator(G: torch.nn.Module, path: str | Path, note: dict[str, Any] | None = None) -> Path:
    """Write `G` to `path` and return the weights file.

    `path` ending in `.safetensors` names the weights file (the config goes to `config.json` beside it; an
    existing one must describe the same architecture); any other path is a folder that receives
    `model.safetensors` + `config.json`. `note` adds JSON-able provenance (e.g. the source model) to the config.
    """
    weights = model_folder.weights_path(path)
    if (weights.parent / model_folder.CONFIG_FILE).is_file():
        existing = read_config(weights.parent)
        config = generator_config(G)
        if (existing["family"], existing["init_kwargs"]) != (config["family"], config["init_kwargs"]):
            raise ValueError(f"{weights.parent.name}/{model_folder.CONFIG_FILE} describes a different architecture; "
                             "save to another folder")
    return save_converted(G, weights, dict(source="inversion (pivotal tuning)", **(note or {})))
