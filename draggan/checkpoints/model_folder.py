"""The one reader/writer of a model folder: `model.safetensors` (the tensors) + `config.json` (how to rebuild).

Like diffusers' `save_pretrained` / `from_pretrained`, every saved model of the project (the converted-model
cache, a photo-tuned generator, a trained generator, the keypoint regressor) goes through this module:

- `save_model_folder(path, module_or_state, config, metadata)` writes the tensors (detached, on the CPU,
  contiguous) and the JSON config `{**config, **metadata}`. The same JSON is also stored in the safetensors
  header under the key `"config"`, so a `.safetensors` file copied on its own still carries its config.
  Each file is written to a temporary name in its folder and renamed into place, weights first, so a reader
  never sees a half-written file.
- `is_model_folder(path)` tells a model folder or weights file from anything else by content, never by name.
- `read_config(path)` / `load_model_folder(path)` read it back. `path` is the folder or its weights file;
  a weights file may also be any `*.safetensors` with a `config.json` beside it. The config comes from
  `config.json` when there is one (folders written before the config was embedded, like the bundled
  `checkpoints/cartoon-faces-*`, load unchanged), else from the safetensors header.

What a config must contain is the caller's business (`builders.validate_config` checks a generator's, the
keypoint regressor checks its own); this module only guarantees a JSON object, or `ModelFormatError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..errors import ModelFormatError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METADATA_KEY = "config"
MAX_CONFIG_CHARS = 64 * 1024
TMP_PREFIX = ".tmp-"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def weights_path(path: str | Path) -> Path:
    """The weights file of `path`: itself when it names a `.safetensors` file, else `<path>/model.safetensors`."""
    path = Path(path)
    return path if path.suffix == ".safetensors" or path.is_file() else path / WEIGHTS_FILE


def _looks_like_safetensors(path: Path) -> bool:
    """Content check: 8-byte little-endian header length followed by a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= _MAX_HEADER_BYTES and head[8:9] == b"{"


def is_model_folder(path: str | Path) -> bool:
    """True for a model folder (config + weights) or a safetensors weights file (judged by content)."""
    path = Path(path)
    if path.is_dir():
        return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
    return path.is_file() and _looks_like_safetensors(path)


def _shown(path: Path) -> str:
    """`folder/file`: enough to tell the user which file, without the server's directory layout."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _write_atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tensors(module_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    return {name: t.detach().to("cpu").contiguous() for name, t in state.items()}


def save_model_folder(path: str | Path, module_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
                      config: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a model folder (or, for a `.safetensors` path, that file with `config.json` beside it).

    `config`: what rebuilds the model (e.g. `format_version`, `family`, `init_kwargs`); `metadata`: JSON-able
    provenance stored next to it (source model, kimg, ...). Returns the weights file.
    """
    weights = weights_path(path)
    full = {**config, **(metadata or {})}
    text = json.dumps(full, indent=1)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = _tensors(module_or_state)
    _write_atomic(weights, lambda tmp: safetensors.torch.save_file(state, tmp, metadata={METADATA_KEY: text}))
    _write_atomic(weights.parent / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return weights


def _embedded_config(weights: Path) -> str | None:
    try:
        with safetensors.safe_open(str(weights), framework="pt") as f:
            return (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:
        raise ModelFormatError(f"{_shown(weights)}: unreadable safetensors file ({type(e).__name__})") from e


def read_config(path: str | Path) -> dict[str, Any]:
    """The config of a model folder or weights file: `config.json` if present, else the one in the weights."""
    weights = weights_path(path)
    config_file = weights.parent / CONFIG_FILE
    if config_file.is_file():
        source = config_file
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as e:
            raise ModelFormatError(f"{_shown(config_file)}: unreadable model config ({type(e).__name__})") from e
    else:
        source = weights
        text = _embedded_config(weights) if weights.is_file() else None
        if text is None:
            raise ModelFormatError(f"{_shown(weights)}: no {CONFIG_FILE} beside it and no config inside it")
    return parse_config(text, _shown(source))


def parse_config(text: str, where: str) -> dict[str, Any]:
    """A model config from its JSON text (bounded in size: it may come from an uploaded file's header)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise ModelFormatError(f"{where}: the model config is larger than {MAX_CONFIG_CHARS} characters")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFormatError(f"{where}: the model config is not valid JSON") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{where}: the model config is not a JSON object")
    return config


def config_metadata(config: Mapping[str, Any]) -> dict[str, str]:
    """safetensors metadata that carries `config` inside the weights file (as `save_model_folder` writes it)."""
    return {METADATA_KEY: json.dumps(config, separators=(",", ":"))}


def metadata_config(metadata: Mapping[str, str] | None, where: str) -> dict[str, Any]:
    """The config a safetensors file's metadata carries; `ModelFormatError` naming `where` if absent or bad."""
    text = (metadata or {}).get(METADATA_KEY)
    if not isinstance(text, str):
        raise ModelFormatError(f"{where} carries no model config: a .safetensors model needs its config.json "
                               "beside it, or in its metadata (as DragGAN studio writes it)")
    return parse_config(text, where)


def load_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a model folder or weights file, by name (memory-mapped from the file on the CPU)."""
    weights = weights_path(path)
    try:
        return safetensors.torch.load_file(str(weights), device=str(device))
    except Exception as e:
        raise ModelFormatError(f"{_shown(weights)}: unreadable model weights ({type(e).__name__})") from e


def load_model_folder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors by name on the CPU, config) of a model folder or weights file written by `save_model_folder`."""
    return load_state(path), read_config(path)
