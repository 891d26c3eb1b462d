"""A pickle reader whose time and memory are bounded by the file's size, whatever the file says.

`BoundedUnpickler` runs the pure-Python opcode loop of the standard library with hard limits: only an
allow-list of opcodes (no INST/OBJ/EXT/buffers/persistent ids), at most `max_ops` opcodes, `max_stack`
objects on the stack (all MARK levels together), `max_marks` MARK levels and `max_memo` memo entries. A
length a file claims (BINBYTES8, BINUNICODE8, FRAME, ...) is refused before anything is allocated when it
exceeds the bytes left in the file; LONG4 integers are at most `max_long_bytes`. Dict keys and set members
must be atoms (str, bytes, int, float, bool, None; strings at most `max_key_chars`), so no nested tuple is
ever hashed: a tuple built from memo references 40 levels deep costs 2^40 operations to hash or `str()`.
Every global call (REDUCE), class instantiation (NEWOBJ) and BUILD goes through a subclass's
`call_global` / `new_object` / `build` hook, which checks the arguments; the base class refuses all.

`check_graph` then walks the result counting every visit, shared references included, so any later naive
traversal (`str`, `json.dumps`, `copy.deepcopy`, recursion over a module tree) is bounded by `max_nodes`
and `max_depth`. Every refusal is an `UnsafePickleError` with one line that names no path.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from typing import Any, BinaryIO, Callable, Iterable

from ..errors import UnsafePickleError

_ATOMS = (str, bytes, int, float, bool, type(None))

ALLOWED_OPCODES = frozenset(op[0] for op in (
    pickle.PROTO, pickle.FRAME, pickle.STOP, pickle.MARK, pickle.POP, pickle.POP_MARK, pickle.DUP,
    pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE, pickle.INT, pickle.BININT, pickle.BININT1, pickle.BININT2,
    pickle.LONG, pickle.LONG1, pickle.LONG4, pickle.FLOAT, pickle.BINFLOAT,
    pickle.STRING, pickle.BINSTRING, pickle.SHORT_BINSTRING, pickle.UNICODE, pickle.BINUNICODE,
    pickle.SHORT_BINUNICODE, pickle.BINUNICODE8, pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8,
    pickle.EMPTY_TUPLE, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
    pickle.EMPTY_LIST, pickle.LIST, pickle.APPEND, pickle.APPENDS,
    pickle.EMPTY_DICT, pickle.DICT, pickle.SETITEM, pickle.SETITEMS, pickle.EMPTY_SET, pickle.ADDITEMS,
    pickle.FROZENSET, pickle.GLOBAL, pickle.STACK_GLOBAL, pickle.REDUCE, pickle.BUILD, pickle.NEWOBJ,
    pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE,
))


@dataclasses.dataclass(frozen=True)
class PickleLimits:
    """Hard bounds on one pickle read.

    A 380 MB FFHQ-1024 pickle (G, D, G_ema) takes about 30 k opcodes and 5 k nodes, the fixtures (with
    discriminator and augmentation pipeline) 22 k opcodes and 10 k nodes: the defaults leave a wide margin.
    """

    max_ops: int = 4_000_000
    max_stack: int = 1_000_000
    max_marks: int = 256
    max_memo: int = 1_000_000
    max_long_bytes: int = 64
    max_key_chars: int = 1024
    max_str_chars: int = 4 << 20
    max_nodes: int = 500_000
    max_depth: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PickleLimits.{f.name} must be a positive int, got {value!r}")


class _BoundedReader:
    """File wrapper that refuses any read longer than what is left in the file, before reading."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._left = size

    def read(self, n: int) -> bytes:
        if n > self._left:
            raise UnsafePickleError(f"refusing to load: the pickle claims {n} bytes where the file has "
                                    f"{max(self._left, 0)} left")
        data = self._file.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._file.readline(min(self._left, 1 << 20) + 1)
        self._left -= len(data)
        return data


def _remaining_size(file: BinaryIO) -> int:
    if isinstance(file, io.BytesIO):
        return len(file.getbuffer()) - file.tell()
    try:
        return os.fstat(file.fileno()).st_size - file.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        pos = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(pos)
        return end - pos


def type_name(obj: Any) -> str:
    """The name of `obj`'s type: what refusals say instead of the (possibly huge) value itself."""
    return type(obj).__name__


class BoundedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler with opcode, stack, memo, length and key limits; calls go through hooks."""

    dispatch = dict(pickle._Unpickler.dispatch)
    allowed_opcodes = ALLOWED_OPCODES

    def __init__(self, file: BinaryIO, limits: PickleLimits | None = None) -> None:
        self.limits = limits or PickleLimits()
        self._bytes = _remaining_size(file)
        super().__init__(_BoundedReader(file, self._bytes))
        self._below = 0

    # ---- hooks for subclasses

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refusing to load: the pickle references the global '{module}.{name}'")

    def call_global(self, func: Any, args: tuple) -> Any:
        """REDUCE: `func(*args)` after checking both; the base class refuses every call."""
        raise UnsafePickleError(f"refusing to load: the pickle calls a {type_name(func)}")

    def new_object(self, cls: Any, args: tuple) -> Any:
        """NEWOBJ: `cls.__new__(cls, *args)` after checking both; the base class refuses."""
        raise UnsafePickleError(f"refusing to load: the pickle instantiates a {type_name(cls)}")

    def build(self, inst: Any, state: Any) -> None:
        """BUILD: set `inst`'s state after checking it; the base class refuses."""
        raise UnsafePickleError(f"refusing to load: the pickle sets the state of a {type_name(inst)}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to load: the pickle uses persistent ids (not a network pickle)")

    # ---- the opcode loop

    def load(self) -> Any:
        """Read one pickle from the file, enforcing `self.limits`."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack = []
        self.stack = []
        self.append = self.stack.append
        self.proto = 0
        self._below = 0
        read, dispatch, limits, allowed = self.read, self.dispatch, self.limits, self.allowed_opcodes
        ops = 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError("pickle data ended before its STOP opcode")
                ops += 1
                if ops > limits.max_ops:
                    raise UnsafePickleError(f"refusing to load: more than {limits.max_ops} pickle opcodes")
                code = key[0]
                if code not in allowed:
                    raise UnsafePickleError(f"refusing to load: the pickle uses opcode {key!r}, which network "
                                            "pickles never contain")
                dispatch[code](self)
                if self._below + len(self.stack) > limits.max_stack:
                    raise UnsafePickleError(f"refusing to load: more than {limits.max_stack} objects on the "
                                            "pickle stack")
                if len(self.metastack) > limits.max_marks:
                    raise UnsafePickleError(f"refusing to load: more than {limits.max_marks} nested pickle marks")
                if len(self.memo) > limits.max_memo:
                    raise UnsafePickleError(f"refusing to load: more than {limits.max_memo} pickle memo entries")
        except pickle._Stop as stop:
            return stop.value

    def load_mark(self) -> None:
        self._below += len(self.stack)
        super().load_mark()
    dispatch[pickle.MARK[0]] = load_mark

    def pop_mark(self) -> list:
        items = super().pop_mark()
        self._below -= len(self.stack)
        return items

    def load_long4(self) -> None:
        n, = pickle.unpack("<i", self.read(4))
        if not 0 <= n <= self.limits.max_long_bytes:
            raise UnsafePickleError(f"refusing to load: a {n}-byte integer in the pickle")
        self.append(pickle.decode_long(self.read(n)))
    dispatch[pickle.LONG4[0]] = load_long4

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, _ATOMS) or (isinstance(key, (str, bytes)) and len(key) > self.limits.max_key_chars):
            raise UnsafePickleError(f"refusing to load: a dict key or set member is a {type_name(key)}"
                                    + (f" of {len(key)} characters" if isinstance(key, (str, bytes)) else ""))

    def load_setitem(self) -> None:
        self._check_key(self.stack[-2])
        super().load_setitem()
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.stack
        for i in range(0, len(items), 2):
            self._check_key(items[i])
        super().load_setitems()
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self) -> None:
        for i in range(0, len(self.stack), 2):
            self._check_key(self.stack[i])
        super().load_dict()
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        for item in self.stack:
            self._check_key(item)
        target = self.metastack[-1][-1] if self.metastack and self.metastack[-1] else None
        if not isinstance(target, (set, frozenset)):
            raise UnsafePickleError("refusing to load: ADDITEMS on something that is not a set")
        super().load_additems()
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        for item in self.stack:
            self._check_key(item)
        super().load_frozenset()
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_reduce(self) -> None:
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise UnsafePickleError(f"refusing to load: REDUCE arguments are a {type_name(args)}, not a tuple")
        self.stack[-1] = self.call_global(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple):
            raise UnsafePickleError(f"refusing to load: NEWOBJ arguments are a {type_name(args)}, not a tuple")
        self.append(self.new_object(cls, args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self) -> None:
        state = self.stack.pop()
        self.build(self.stack[-1], state)
    dispatch[pickle.BUILD[0]] = load_build


def check_graph(root: Any, limits: PickleLimits, expand: Callable[[Any], Iterable[Any] | None],
                leaf_types: tuple[type, ...]) -> None:
    """Refuse a result graph that a naive traversal could not walk in `limits.max_nodes` steps.

    Visits, level by level, every container (dict keys and values, list, tuple, set, frozenset, and whatever
    `expand(obj)` returns for other objects) once per reference, so shared sub-graphs count each time they
    are reached. Leaves must be atoms (strings at most `max_str_chars`) or instances of `leaf_types`.
    """
    level: list[Any] = [root]
    depth = visits = 0
    too_many = UnsafePickleError(f"refusing to load: the pickle's objects expand to more than {limits.max_nodes} "
                                 "nodes (shared references counted each time they are reached)")
    while level:
        if depth > limits.max_depth:
            raise UnsafePickleError(f"refusing to load: objects nested more than {limits.max_depth} levels deep")
        visits += len(level)
        if visits > limits.max_nodes:
            raise too_many
        below: list[Any] = []
        for obj in level:
            if isinstance(obj, (str, bytes)):
                if len(obj) > limits.max_str_chars:
                    raise UnsafePickleError(f"refusing to load: a string of {len(obj)} characters")
            elif isinstance(obj, _ATOMS) or isinstance(obj, leaf_types):
                continue
            elif isinstance(obj, dict):
                below.extend(obj.keys())
                below.extend(obj.values())
            elif isinstance(obj, (list, tuple, set, frozenset)):
                below.extend(obj)
            else:
                found = expand(obj)
                if found is None:
                    raise UnsafePickleError(f"refusing to load: unexpected {type_name(obj)} object in the pickle")
                below.extend(found)
            if len(below) > limits.max_nodes:
                raise too_many
        level = below
        depth += 1
