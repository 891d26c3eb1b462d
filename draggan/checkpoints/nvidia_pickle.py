"""Safe reading of NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3, StyleGAN-Human, TF-era).

NVIDIA's pickles embed the Python source of their network modules and, when loaded with `pickle.load`,
import and execute it (plus `dnnlib` / `torch_utils`). We never do: a restricted unpickler resolves only an
explicit allow-list of globals, each mapped to a harmless constructor of ours. Persistent network objects
become `PersistentObject` records (class name + state dict); their `module_src` is kept as text and never
run. Any other global in the file is refused, naming it, before anything from the file is called.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from ..errors import UnsafePickleError


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict`: a plain dict that also allows attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


@dataclass
class PersistentObject:
    """A network object from NVIDIA's `torch_utils.persistence`: its class name and pickled `__dict__`."""

    class_name: str
    state: dict
    module_src: str = field(repr=False, default="")

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}))

    @property
    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules", {}))

    def child(self, name: str) -> "PersistentObject":
        obj = self.children.get(name)
        if not isinstance(obj, PersistentObject):
            raise KeyError(f"{self.class_name} has no persistent child {name!r}")
        return obj

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat `state_dict`-style mapping of every parameter and persistent buffer below this object."""
        out: dict[str, torch.Tensor] = {}
        _collect_tensors(self.state, "", out)
        return out


@dataclass
class TFNetwork:
    """Stand-in for `dnnlib.tflib.network.Network` (TF-era pickles): state only, build code never run."""

    state: dict = field(default_factory=dict)

    def __getstate__(self) -> dict:
        return self.state

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("TF network state is not a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs", {}))

    @property
    def components(self) -> dict[str, "TFNetwork"]:
        return dict(self.state.get("components", {}))

    def variables(self) -> dict[str, np.ndarray]:
        """All variables of this network and its components, keyed by their path (`mapping/Dense0/weight`)."""
        out: dict[str, np.ndarray] = {}
        for name, value in self.state.get("variables", []):
            out[name] = np.asarray(value)
        for comp_name, comp in self.components.items():
            for name, value in comp.variables().items():
                out[f"{comp_name}/{name}"] = value
        return out


def _collect_tensors(state: dict, prefix: str, out: dict[str, torch.Tensor]) -> None:
    skip = set(state.get("_non_persistent_buffers_set", ()))
    for name, value in state.get("_parameters", {}).items():
        if value is not None:
            out[prefix + name] = value.detach() if isinstance(value, torch.nn.Parameter) else value
    for name, value in state.get("_buffers", {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in state.get("_modules", {}).items():
        if isinstance(child, PersistentObject):
            _collect_tensors(child.state, f"{prefix}{name}.", out)
        elif isinstance(child, torch.nn.Module):
            for key, value in child.state_dict().items():
                out[f"{prefix}{name}.{key}"] = value


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("malformed persistent object in network pickle")
    return PersistentObject(class_name=str(meta.get("class_name")), state=meta["state"],
                            module_src=str(meta.get("module_src", "")))


def _load_storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refusing numpy.dtype built from {type(spec).__name__}")
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise UnsafePickleError("refusing object dtype in network pickle")
    return dtype


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafePickleError("refusing numpy scalar that is not plain data")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafePickleError("refusing numpy reconstruction of a non-ndarray class")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only `ALLOWED_GLOBALS` and refuses persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load: the pickle references the global '{module}.{name}', which is not on "
                "DragGAN studio's allow-list of network-pickle contents"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to load: the pickle uses persistent ids (not a network pickle)")


def read_network_pickle(source: str | Path | BinaryIO) -> Any:
    """Unpickle a network pickle safely and return its top-level object (a dict, or a TF (G, D, Gs) tuple)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return RestrictedUnpickler(f).load()
    return RestrictedUnpickler(source).load()
