"""Safe reading of NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3, StyleGAN-Human, TF-era).

NVIDIA's pickles embed the Python source of their network modules and, when loaded with `pickle.load`,
import and execute it (plus `dnnlib` / `torch_utils`). We never do: a bounded unpickler (see
`bounded_unpickler`: opcode, stack, memo, length and key limits) resolves only an explicit allow-list of
globals, each mapped to a harmless constructor of ours that checks its arguments: plain numeric numpy dtypes
only, arrays and tensors no larger than the bytes in the file, persistent objects whose `class_name` is a
short identifier and whose `module_src` is a bounded string. Persistent network objects become
`PersistentObject` records (class name + state dict); their `module_src` is kept as text and never run.
Any other global in the file is refused, naming it, before anything from the file is called. The result
is then walked once with a node budget (`check_graph`), so later traversals of it are bounded too.

`generator_description(G_ema)` turns the pickled `Generator` into the plain description every model reader
hands to `builders.generator_from_state`: the converted-model config (family, told from the synthesis
network's children, never the file name, and our constructor's kwargs) and the tensors by name.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np
import torch

from .bounded_unpickler import BoundedUnpickler, PickleLimits, check_graph, type_name
from .builders import FORMAT_VERSION, generator_from_state
from ..errors import UnsafePickleError
from .torch_storage import rebuild_parameter, rebuild_tensor, storage_from_bytes

__all__ = ["ALLOWED_GLOBALS", "EasyDict", "PersistentObject", "PickleLimits", "RestrictedUnpickler", "TFNetwork",
           "UnsafePickleError", "describe_contents", "generator_description", "generator_from_persistent", "read_network_pickle"]


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


_CLASS_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_MODULE_SRC_CHARS = 4 << 20
_NUMERIC_KINDS = frozenset("biufc")
MAX_ARRAY_DIMS = 8


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("malformed persistent object in network pickle")
    class_name, module_src = meta.get("class_name"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not _CLASS_NAME_RE.fullmatch(class_name):
        raise UnsafePickleError(f"refusing to load: a network object's class_name is "
                                f"{'a malformed string' if isinstance(class_name, str) else 'a ' + type_name(class_name)}"
                                ", not a short identifier")
    if not isinstance(module_src, str) or len(module_src) > MAX_MODULE_SRC_CHARS:
        raise UnsafePickleError(f"refusing to load: a network object's module_src is "
                                f"{'too long' if isinstance(module_src, str) else 'a ' + type_name(module_src)}")
    return PersistentObject(class_name=class_name, state=meta["state"], module_src=module_src)


def _check_numeric_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.hasobject \
            or dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize > 16:
        raise UnsafePickleError(f"refusing to load: numpy data of type {dtype!s:.40} (only plain numbers are "
                                "allowed)" if isinstance(dtype, np.dtype) else
                                f"refusing to load: numpy data typed by a {type_name(dtype)}")
    return dtype


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 8 or not isinstance(align, bool) or not isinstance(copy, bool):
        raise UnsafePickleError(f"refusing numpy.dtype built from {type_name(spec)}")
    try:
        dtype = np.dtype(spec, align, True)  # always a copy: a BUILD then never touches numpy's shared dtypes
    except TypeError:
        raise UnsafePickleError("refusing to load: unknown numpy dtype in the pickle") from None
    return _check_numeric_dtype(dtype)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(data, bytes) or not isinstance(dtype, np.dtype):
        raise UnsafePickleError("refusing numpy scalar that is not plain data")
    dtype = _check_numeric_dtype(dtype)
    if len(data) != dtype.itemsize:
        raise UnsafePickleError("refusing to load: numpy scalar of the wrong size")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    """numpy's `_reconstruct`: in a genuine pickle always an empty uint8 array that a BUILD then fills."""
    if cls is not np.ndarray:
        raise UnsafePickleError("refusing numpy reconstruction of a non-ndarray class")
    if shape not in ((0,), [0], 0) or dtype_code not in (b"b", "b"):
        raise UnsafePickleError("refusing to load: numpy array reconstruction other than numpy's own "
                                "(empty shape, byte type)")
    return np.ndarray.__new__(np.ndarray, (0,), "b")


def _build_ndarray(array: np.ndarray, state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)
            and len(state[1]) <= MAX_ARRAY_DIMS and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                        for n in state[1])
            and isinstance(state[3], bool) and isinstance(state[4], bytes)):
        raise UnsafePickleError("refusing to load: malformed numpy array state")
    dtype = _check_numeric_dtype(state[2])
    if array.size != 0 or math.prod(state[1]) * dtype.itemsize != len(state[4]):
        raise UnsafePickleError(f"refusing to load: a numpy array of shape {state[1]!s:.80} claims more or "
                                f"fewer bytes than the {len(state[4])} it holds")
    array.__setstate__(state)


def _build_dtype(dtype: np.dtype, state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
            and state[2] is None and state[3] is None and state[4] is None
            and all(isinstance(v, int) and -1 <= v <= 64 for v in state[5:7]) and isinstance(state[7], int)
            and isinstance(state[0], int)):
        raise UnsafePickleError("refusing to load: numpy dtype state other than a plain number type")
    dtype.__setstate__(state)
    _check_numeric_dtype(dtype)


_CALLABLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): storage_from_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
}
# Classes: only ever made empty (NEWOBJ / REDUCE without arguments) or, for sets, from atoms.
_CLASSES: dict[tuple[str, str], type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetwork,
    ("numpy", "ndarray"): np.ndarray,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {**_CALLABLES, **_CLASSES}
_CALLABLE_SET = frozenset(map(id, _CALLABLES.values()))
_EMPTY_CLASSES = (collections.OrderedDict, EasyDict, TFNetwork)


class RestrictedUnpickler(BoundedUnpickler):
    """Resolves only `ALLOWED_GLOBALS`, checks every call's arguments and every BUILD's state."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load: the pickle references the global '{module:.100}.{name:.100}', which is not "
                "on DragGAN studio's allow-list of network-pickle contents"
            ) from None

    def call_global(self, func: Any, args: tuple) -> Any:
        if id(func) in _CALLABLE_SET:
            return func(*args)
        if func in _EMPTY_CLASSES and not args:
            return func()
        if func in (set, frozenset) and len(args) <= 1:
            items = args[0] if args else ()
            if not isinstance(items, (list, tuple, set, frozenset)):
                raise UnsafePickleError(f"refusing to load: a set built from a {type_name(items)}")
            for item in items:
                self._check_key(item)
            return func(items)
        raise UnsafePickleError(f"refusing to load: the pickle calls {getattr(func, '__name__', type_name(func))}"
                                f" with {len(args)} argument(s), which network pickles never do")

    def new_object(self, cls: Any, args: tuple) -> Any:
        if cls in _EMPTY_CLASSES and not args:
            return cls.__new__(cls)
        raise UnsafePickleError(f"refusing to load: the pickle instantiates "
                                f"{getattr(cls, '__name__', type_name(cls))} with arguments")

    def build(self, inst: Any, state: Any) -> None:
        if isinstance(inst, np.ndarray) and type(inst) is np.ndarray:
            _build_ndarray(inst, state)
        elif isinstance(inst, np.dtype):
            _build_dtype(inst, state)
        elif isinstance(inst, TFNetwork):
            inst.__setstate__(state)
        else:
            super().build(inst, state)


def _expand(obj: Any) -> Iterable[Any] | None:
    if isinstance(obj, PersistentObject):
        return (obj.class_name, obj.module_src, obj.state)
    if isinstance(obj, TFNetwork):
        return (obj.state,)
    return None


_LEAVES = (torch.Tensor, np.ndarray, np.generic, np.dtype)


def read_network_pickle(source: str | Path | BinaryIO, limits: PickleLimits | None = None) -> Any:
    """Unpickle a network pickle safely and return its top-level object (a dict, or a TF (G, D, Gs) tuple).

    Raises `UnsafePickleError` for anything outside the allow-list or `limits`; other exceptions mean a
    malformed file (callers turn them into `ModelFormatError`).
    """
    limits = limits or PickleLimits()
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            obj = RestrictedUnpickler(f, limits).load()
    else:
        obj = RestrictedUnpickler(source, limits).load()
    check_graph(obj, limits, _expand, _LEAVES)
    return obj


def describe_contents(obj: Any) -> str:
    """Short description of what a pickle held, from type names and string keys only (never a repr)."""
    if isinstance(obj, dict):
        keys = sorted(str(k)[:40] for k in obj if isinstance(k, str))[:8]
        return f"a dict with keys {keys}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items ({', '.join(type(o).__name__ for o in obj[:4])})"
    return f"a {type(obj).__name__}"


def _plain(value: Any) -> Any:
    """Convert EasyDicts, tuples and numpy scalars from a pickle into JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def detect_family(G: PersistentObject) -> str:
    """Tell StyleGAN2 from StyleGAN3 by the synthesis network's children, never by file name."""
    synthesis = G.child("synthesis")
    children = synthesis.children
    if "input" in children and getattr(children["input"], "class_name", "") == "SynthesisInput":
        return "stylegan3"
    if "b4" in children and getattr(children["b4"], "class_name", "") == "SynthesisBlock":
        return "stylegan2"
    raise ValueError(f"unrecognised generator architecture (synthesis children: {sorted(children)})")


def stylegan2_kwargs(G: PersistentObject) -> dict[str, Any]:
    """Normalise a StyleGAN2 Generator's pickled constructor arguments to our `stylegan2.Generator`'s."""
    kw = _plain(G.init_kwargs)
    names = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
    for name, value in zip(names, _plain(list(G.init_args))):
        kw.setdefault(name, value)
    synthesis_kwargs = dict(kw.pop("synthesis_kwargs", {}) or {})
    mapping_kwargs = dict(kw.pop("mapping_kwargs", {}) or {})
    kw.pop("resize", None)
    kw.pop("padding", None)
    for key in list(kw):
        if key not in names:
            synthesis_kwargs.setdefault(key, kw.pop(key))
    const = G.child("synthesis").child("b4").state["_parameters"]["const"]
    if const.shape[1] != const.shape[2]:
        synthesis_kwargs["square"] = False
    return dict(**{k: kw[k] for k in names}, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)


def stylegan3_kwargs(G: PersistentObject) -> dict[str, Any]:
    """Normalise a pickled NVIDIA StyleGAN3 `Generator`'s constructor arguments to our `stylegan3.Generator`'s
    (positional arguments named, EasyDicts and numpy scalars made plain, so the result is JSON-able)."""
    from ..networks.stylegan3 import GENERATOR_ARG_NAMES

    kw = _plain(G.init_kwargs)
    for name, value in zip(GENERATOR_ARG_NAMES, _plain(list(G.init_args))):
        assert name not in kw, f"{name} given both positionally and by keyword"
        kw[name] = value
    missing = [name for name in GENERATOR_ARG_NAMES[:5] if name not in kw]
    if missing:
        raise ValueError(f"StyleGAN3 pickle lacks generator arguments {missing}")
    kw["mapping_kwargs"] = dict(kw.get("mapping_kwargs") or {})
    return kw


def generator_description(G: PersistentObject) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(converted-model config, tensors by name) of a pickled NVIDIA `Generator`, for `generator_from_state`."""
    family = detect_family(G)
    kwargs = stylegan2_kwargs(G) if family == "stylegan2" else stylegan3_kwargs(G)
    return dict(format_version=FORMAT_VERSION, family=family, init_kwargs=kwargs), G.tensors()


def generator_from_persistent(G: PersistentObject) -> torch.nn.Module:
    """Build our generator (eval mode, no grads) from a pickled NVIDIA `Generator` object and its weights."""
    config, tensors = generator_description(G)
    return generator_from_state(config, tensors, G.class_name)
