"""Checked reading of the tensors inside NVIDIA network pickles, without `torch.load`.

A pickled torch tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
hooks)` whose storage is `torch.storage._load_from_bytes(b)`: `b` is a legacy (pre-zip) `torch.save` of one
storage, five small pickles (magic number, protocol 1001, system info, a persistent id
`('storage', torch.FloatStorage, key, location, numel)`, the key list) followed by the element count as
int64 and the raw little-endian elements. `storage_from_bytes` parses exactly that layout with the bounded
unpickler and refuses any storage whose claimed size differs from the bytes present; the tensor views those
bytes without copying. `rebuild_tensor` refuses sizes and strides that reach outside their storage or
make a tensor larger than it (a stride-0 view of 2^40 elements). Parameters carry no hooks or extra state.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import warnings
from typing import Any

import torch

from .bounded_unpickler import ALLOWED_OPCODES, BoundedUnpickler, PickleLimits, type_name
from ..errors import UnsafePickleError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_DIMS = 8

STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_STORAGE_LIMITS = PickleLimits(max_ops=200, max_stack=64, max_marks=4, max_memo=64, max_nodes=200, max_depth=4)


@dataclasses.dataclass(frozen=True)
class CheckedStorage:
    """One storage read from a pickle: its element type and its bytes (a view of the pickle's data)."""

    dtype: torch.dtype
    untyped: torch.UntypedStorage

    @property
    def numel(self) -> int:
        return self.untyped.nbytes() // self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    dtype: torch.dtype
    key: str
    numel: int


class _StorageUnpickler(BoundedUnpickler):
    """Reads the small pickles of a legacy storage file: storage types are the only globals."""

    allowed_opcodes = ALLOWED_OPCODES | {pickle.BINPERSID[0]}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise UnsafePickleError(f"refusing to load: a tensor storage references the global '{module}.{name}'")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and len(pid[2]) <= 64
                and isinstance(pid[3], str) and len(pid[3]) <= 64 and _is_int(pid[4]) and pid[4] >= 0
                and (len(pid) == 5 or pid[5] is None)):
            raise UnsafePickleError("refusing to load: malformed tensor storage record in the pickle")
        return _StorageRef(pid[1].dtype, pid[2], pid[4])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def storage_from_bytes(data: Any) -> CheckedStorage:
    """`torch.storage._load_from_bytes` for one legacy-format storage, sizes checked against `data`."""
    if not isinstance(data, bytes):
        raise UnsafePickleError(f"refusing to load: tensor storage from a {type_name(data)}, not bytes")
    f = io.BytesIO(data)

    def part() -> Any:
        return _StorageUnpickler(f, _STORAGE_LIMITS).load()

    try:
        magic, protocol, sys_info, ref, keys = part(), part(), part(), part(), part()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise UnsafePickleError(f"refusing to load: unreadable tensor storage ({type(e).__name__})") from None
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict) \
            or sys_info.get("little_endian") is not True:
        raise UnsafePickleError("refusing to load: tensor storage is not a little-endian legacy torch.save")
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise UnsafePickleError("refusing to load: tensor storage holds something other than one storage")
    count = int.from_bytes(f.read(8), "little")
    start = f.tell()
    nbytes = ref.numel * ref.dtype.itemsize
    if count != ref.numel or len(data) - start != nbytes:
        raise UnsafePickleError(f"refusing to load: a tensor storage claims {ref.numel} elements of "
                                f"{ref.dtype} but holds {max(len(data) - start, 0)} bytes")
    if nbytes == 0:
        return CheckedStorage(ref.dtype, torch.UntypedStorage(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffer: these tensors are only ever read
        view = torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=start)
    return CheckedStorage(ref.dtype, view.untyped_storage())


def _empty_hooks(hooks: Any) -> bool:
    return isinstance(hooks, dict) and not hooks


def rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                   backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """`torch._utils._rebuild_tensor_v2` with every argument checked against its storage."""
    if not isinstance(storage, CheckedStorage):
        raise UnsafePickleError(f"refusing to load: tensor built on a {type_name(storage)}, not a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= MAX_DIMS
            and all(_is_int(v) and v >= 0 for v in (*size, *stride)) and _is_int(storage_offset)
            and storage_offset >= 0):
        raise UnsafePickleError("refusing to load: malformed tensor size, stride or offset in the pickle")
    if not isinstance(requires_grad, bool) or not (backward_hooks is None or _empty_hooks(backward_hooks)) \
            or metadata:
        raise UnsafePickleError("refusing to load: a tensor with hooks or extra state in the pickle")
    numel = math.prod(size)
    if numel:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel or numel > storage.numel:
            raise UnsafePickleError(f"refusing to load: a tensor of {numel} elements outside its storage of "
                                    f"{storage.numel}")
    tensor = torch.empty(0, dtype=storage.dtype)
    tensor.set_(storage.untyped, storage_offset, size, stride)
    return tensor


def rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.nn.Parameter:
    """`torch._utils._rebuild_parameter` for a checked tensor, without hooks."""
    if not isinstance(data, torch.Tensor) or isinstance(data, torch.nn.Parameter) \
            or not isinstance(requires_grad, bool) or not _empty_hooks(backward_hooks):
        raise UnsafePickleError("refusing to load: malformed parameter in the pickle")
    return torch.nn.Parameter(data, requires_grad=requires_grad and data.is_floating_point())
