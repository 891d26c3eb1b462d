"""Write one of our generators as an NVIDIA network pickle (stylegan2-ada-pytorch layout), for tests and benches.

`write_nvidia_pickle(path, G_ema, G=None, D=None)` pickles a dict with keys `G`, `D`, `G_ema`,
`training_set_kwargs`, `augment_pipe`, every network as a REDUCE of the global
`torch_utils.persistence._reconstruct_persistent_obj(meta)` whose `meta` holds `type='class'`, `version`,
`module_src` (a line that raises if executed), `class_name` and `state` (`_parameters`, `_buffers`,
`_non_persistent_buffers_set`, `_modules`, and `_init_args` / `_init_kwargs` on the top object), with
`dnnlib.util.EasyDict` kwargs and torch's own tensor pickling (`_rebuild_tensor_v2` on
`torch.storage._load_from_bytes`), as in /work/shared/fixtures/README.md. Any module can stand in for
`D`: only its tensors and class name are written.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from draggan.checkpoints.nvidia_pickle import EasyDict

MODULE_SRC = "raise RuntimeError('network pickle module source must never be executed')\n"


def _reconstruct_persistent_obj(meta: dict) -> Any:
    raise RuntimeError("placeholder for NVIDIA's torch_utils.persistence._reconstruct_persistent_obj")


_GLOBAL_NAMES = {
    id(_reconstruct_persistent_obj): ("torch_utils.persistence", "_reconstruct_persistent_obj"),
    id(EasyDict): ("dnnlib.util", "EasyDict"),
}


class _Persistent:
    """Pickles as NVIDIA's persistent network object: `_reconstruct_persistent_obj(meta)`."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


class _NvidiaPickler(pickle._Pickler):
    """Pure-Python pickler that names our stand-ins by NVIDIA's module paths."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        names = _GLOBAL_NAMES.get(id(obj))
        if names is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{names[0]}\n{names[1]}\n".encode())
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[type] = save_global
    dispatch[type(_reconstruct_persistent_obj)] = save_global


def _easy(value: Any) -> Any:
    if isinstance(value, dict):
        return EasyDict({k: _easy(v) for k, v in value.items()})
    return value


def persistent_tree(module: torch.nn.Module, class_name: str | None = None,
                    init_kwargs: dict | None = None) -> _Persistent:
    """`module` and its children as NVIDIA persistent objects (tensors shared, not copied)."""
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_modules": collections.OrderedDict((name, persistent_tree(child)) for name, child in module._modules.items()),
    }
    if init_kwargs is not None:
        state["_init_args"] = ()
        state["_init_kwargs"] = _easy(init_kwargs)
    return _Persistent(dict(type="class", version=6, module_src=MODULE_SRC,
                            class_name=class_name or type(module).__name__, state=state))


def nvidia_pickle_bytes(G_ema: torch.nn.Module, G: torch.nn.Module | None = None,
                        D: torch.nn.Module | None = None, init_kwargs: dict | None = None) -> bytes:
    """The pickle `write_nvidia_pickle` writes, in memory; `init_kwargs` overrides the recorded settings."""
    kwargs = G_ema.init_kwargs if init_kwargs is None else init_kwargs
    data = {
        "G": persistent_tree(G if G is not None else G_ema, "Generator", kwargs),
        "D": persistent_tree(D, "Discriminator") if D is not None else None,
        "G_ema": persistent_tree(G_ema, "Generator", kwargs),
        "training_set_kwargs": EasyDict(resolution=G_ema.img_resolution, use_labels=False),
        "augment_pipe": None,
    }
    buf = io.BytesIO()
    _NvidiaPickler(buf, protocol=4).dump(data)
    return buf.getvalue()


def write_nvidia_pickle(path: str | Path, G_ema: torch.nn.Module, G: torch.nn.Module | None = None,
                        D: torch.nn.Module | None = None, init_kwargs: dict | None = None) -> Path:
    """Write `G_ema` (and optional `G`, `D`) as an NVIDIA network pickle at `path`."""
    path = Path(path)
    path.write_bytes(nvidia_pickle_bytes(G_ema, G, D, init_kwargs))
    return path
