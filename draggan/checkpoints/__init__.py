"""Load a generator from any model source: local pickle, converted cache, zoo key or Hugging Face Hub file.

`load_generator` decides what a file is from its content (never its name): an NVIDIA network pickle (dict with
`G_ema`), a TF-era pickle (a (G, D, Gs) tuple of TF networks) or a converted safetensors entry. After the first
load of a pickle, its converted weights are cached so later loads read no pickle at all.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from ..devices import pick_device
from . import cache
from .builders import generator_from_persistent
from ..errors import ModelFormatError, ModelIntegrityError, ModelUnavailableError
from .hub import ProgressCallback, resolve_source
from .nvidia_pickle import PersistentObject, TFNetwork, UnsafePickleError, read_network_pickle
from .zoo import UnknownModelError, ZooEntry

__all__ = ["ModelFormatError", "ModelIntegrityError", "ModelUnavailableError", "UnknownModelError", "UnsafePickleError",
           "generator_from_pickle", "load_generator"]


def _describe(obj: Any) -> str:
    """Short description of what a pickle held, from type names and string keys only (never a repr)."""
    if isinstance(obj, dict):
        keys = sorted(str(k)[:40] for k in obj if isinstance(k, str))[:8]
        return f"a dict with keys {keys}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items ({', '.join(type(o).__name__ for o in obj[:4])})"
    return f"a {type(obj).__name__}"


def _short(e: BaseException) -> str:
    """`Type: message` of an exception in at most one short line (messages may quote file contents)."""
    text = " ".join(str(e).split()) if all(isinstance(a, str) for a in e.args) else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def generator_from_pickle(path: str | Path, name: str | None = None) -> torch.nn.Module:
    """Build our generator from a network pickle, choosing NVIDIA or TF conversion by the pickle's content.

    `name` is how messages call the file (default: its file name; never its folder). Every failure is an
    `UnsafePickleError` or `ModelFormatError` of one line.
    """
    path = Path(path)
    name = name or path.name
    try:
        obj = read_network_pickle(path)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except OSError as e:
        raise ModelFormatError(f"{name} could not be read ({type(e).__name__})") from None
    except Exception as e:  # any other failure of a hostile or broken file is a format error, in one line
        raise ModelFormatError(f"{name} is not a readable network pickle ({_short(e)})") from None
    if isinstance(obj, dict) and "G_ema" in obj:
        if not isinstance(obj["G_ema"], PersistentObject):
            raise ModelFormatError(f"{name}: 'G_ema' is {_describe(obj['G_ema'])}, not a network object")
        try:
            return generator_from_persistent(obj["G_ema"])
        except ModelFormatError as e:
            raise ModelFormatError(f"{name}: {e}") from None
        except Exception as e:
            raise ModelFormatError(f"{name}: unsupported generator ({_short(e)})") from None
    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(net, TFNetwork) for net in obj):
        from .tf_pickle import generator_from_tf
        try:
            return generator_from_tf(obj[2])
        except ModelFormatError as e:
            raise ModelFormatError(f"{name}: {e}") from None
        except Exception as e:
            raise ModelFormatError(f"{name}: unsupported TF generator ({_short(e)})") from None
    raise ModelFormatError(f"{name} holds no generator: expected a dict with 'G_ema' or a TF (G, D, Gs) "
                           f"tuple, found {_describe(obj)}")


def _load_pickle_cached(path: Path) -> torch.nn.Module:
    """Pickle load through the converted cache; cache problems only ever cost speed, never the load."""
    G, sha = cache.lookup(path)
    if G is not None:
        return G
    G = generator_from_pickle(path)
    try:
        cache.save(G, path, sha)
    except (OSError, TypeError, ValueError, RuntimeError) as e:
        warnings.warn(f"could not write the converted-model cache for {path.name} ({e}); it will be "
                      "converted again next time", stacklevel=3)
    return G


def load_generator(source: str | Path | ZooEntry, device: str | torch.device | None = None, use_cache: bool = True,
                   progress: ProgressCallback | None = None) -> torch.nn.Module:
    """Load a generator (eval mode, no grads) onto `device` (default: CUDA, then MPS, then CPU).

    `source`: a .pkl path, a converted-cache folder or safetensors file, a zoo key (`ffhq-512`), or a Hub file
    (`DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl`, `hf://...`). `progress(done_bytes, total_bytes)` is
    called during a download. Raises `FileNotFoundError`, `ModelUnavailableError`, `ModelFormatError` or
    `UnsafePickleError` with a message naming the file.
    """
    path = resolve_source(source, progress)
    if path.is_dir() and not cache.is_converted(path):
        raise ModelFormatError(f"{path} is a folder but not a converted model (no {cache.CONFIG_FILE} + "
                               f"{cache.WEIGHTS_FILE})")
    if cache.is_converted(path):
        G = cache.load_converted(path)
    elif use_cache:
        G = _load_pickle_cached(path)
    else:
        G = generator_from_pickle(path)
    return G.to(pick_device(device)).eval().requires_grad_(False)
