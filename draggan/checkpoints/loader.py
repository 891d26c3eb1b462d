"""The one way from a model source to a generator: resolve, read, build, then write the converted cache.

1. resolve (`hub.resolve_source`): a zoo key, Hub file or local path becomes a local file or folder;
2. look up (`cache.lookup`): a pickle converted before is read from its cache entry instead;
3. read (`reader.read_model`): a converted model or a network pickle, as (config, tensors);
4. build (`builders.generator_from_state`): the module, its settings range-checked once;
5. write (`cache.save`): a pickle's conversion, so later loads read no pickle at all.

A cache entry that fails to read or build is ignored with a warning, and the fresh conversion of the pickle
replaces it. Every refusal of a file is one `ModelFormatError` or `UnsafePickleError` line naming the file by
its base name, never its folder. The converted form is also read and written here for other callers
(`load_converted`, `save_converted`: tuned and trained generators).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from . import cache, model_folder
from .builders import generator_config, generator_from_state, validate_config
from ..devices import pick_device
from ..errors import ModelFormatError
from .hub import ProgressCallback, resolve_source
from .reader import read_model
from .zoo import ZooEntry


def load_generator(source: str | Path | ZooEntry, device: str | torch.device | None = None, use_cache: bool = True,
                   progress: ProgressCallback | None = None) -> torch.nn.Module:
    """Load a generator (eval mode, no grads) onto `device` (default: CUDA, then MPS, then CPU).

    `source`: a .pkl path, a converted-cache folder or safetensors file, a zoo key (`ffhq-512`), or a Hub file
    (`DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl`, `hf://...`). `progress(done_bytes, total_bytes)` is
    called during a download. Raises `FileNotFoundError`, `ModelUnavailableError`, `ModelFormatError` or
    `UnsafePickleError` with a message naming the file. With `use_cache`, a pickle's conversion is read from
    and written to the converted cache.
    """
    path = resolve_source(source, progress)
    entry, sha = cache.lookup(path) if use_cache else (None, "")
    for file in (entry, path) if entry else (path,):
        try:
            config, tensors = read_model(file, path.name)
            G = generator_from_state(config, tensors, path.name)
            break
        except ModelFormatError as e:
            if file is path:
                raise
            warnings.warn(cache.BROKEN_ENTRY.format(reason=e, source=path.name), stacklevel=2)
    if sha and file is path:
        config = generator_config(G)
        try:
            cache.save(G, config, path, sha, replace=entry is not None)
        except (OSError, TypeError, ValueError, RuntimeError) as e:
            warnings.warn(f"could not write the converted-model cache for {path.name} ({e}); it will be "
                          "converted again next time", stacklevel=2)
    return G.to(pick_device(device)).eval().requires_grad_(False)


def generator_from_pickle(path: str | Path, name: str | None = None) -> torch.nn.Module:
    """Build our generator from a network pickle (NVIDIA or TF, by content), without the cache.

    `name` is how messages call the file (default: its file name; never its folder).
    """
    path = Path(path)
    name = name or path.name
    config, tensors = read_model(path, name)
    return generator_from_state(config, tensors, name)


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated config of a converted folder or weights file; `ModelFormatError` if missing or malformed."""
    return validate_config(model_folder.read_config(path), Path(path).name)


def load_converted(path: str | Path) -> torch.nn.Module:
    """Rebuild a generator from a converted folder or weights file (config beside it or in its header)."""
    path = Path(path)
    state, config = model_folder.load_model_folder(path)
    return generator_from_state(config, state, path.name)


def save_converted(G: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `G` as a converted model folder (or `.safetensors` file) that `load_converted` and
    `load_generator` read; `metadata` is JSON-able provenance. Returns the weights file."""
    return model_folder.save_model_folder(path, G, generator_config(G), metadata)
