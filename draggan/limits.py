"""One table of the limits every input must respect, shared by the UI, the API and recipes.

A public demo takes settings, points and recipe files from strangers, so every size, count and number is
bounded here and checked before it is used (or, for files, before it is decoded). `LIMITS` is the table;
the `check_*` / `parse_points` helpers raise `LimitError` whose message names the field and the allowed
range, e.g. ``lr must be a finite number, got nan`` or ``at most 64 point pairs per drag, got 5000``.

Numbers: `seed`, `psi`, `lr`, `max_steps` (steps of one drag, also a recipe drag's step count),
`render_every`, `mask_lambda` and `inversion_steps` (each of a photo inversion's W, W+ and PTI step counts) are
`Range`s, with the `step` a page field moves by (the page's fields read their minimum, maximum and step here) (closed unless `lo_open`; `integer` ranges take whole numbers
only). Sizes: `point_pairs` per drag, `drags` per recipe, `recipe_bytes` per recipe file, `recipe_depth`
(JSON nesting of a recipe: its deepest legal value is a point or a mask's run lengths at depth 5),
`points_depth` (nesting of a points argument: `[[[hx, hy], [tx, ty]], ...]` is 3), `points_bytes` (points
given as JSON text), `image_side` (largest image height or width a recipe may declare), `mask_pixels`
(decoded fixed-area mask pixels one recipe may hold, distinct masks summed), `label_chars` and `name_chars`
(a recipe's model label; a tracker name).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import LimitError

Point = tuple[float, float]


@dataclass(frozen=True)
class Range:
    """Allowed values of one number: lo ≤ x ≤ hi (lo < x when `lo_open`), whole numbers when `integer`."""

    lo: float
    hi: float
    lo_open: bool = False
    integer: bool = False
    step: float | None = None     # a page field's step (None: 1 for whole numbers)
    page_hi: float | None = None  # a page slider's top where the whole range would not fit a slider

    def field(self) -> dict[str, float | None]:
        """`minimum`, `maximum` and `step` of the page field that sets this number (Gradio's keywords): the
        page reads its bounds here and nowhere else. An open lower end starts one step above it."""
        step = self.step if self.step is not None else (1 if self.integer else None)
        low = self.lo + step if self.lo_open and step else self.lo
        return dict(minimum=low, maximum=self.page_hi if self.page_hi is not None else self.hi, step=step)

    def describe(self) -> str:
        return f"between {_text(self.lo)}{' (exclusive)' if self.lo_open else ''} and {_text(self.hi)}"


def _text(number: float) -> str:
    """A number as a person writes it: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e16 else f"{number:g}"


@dataclass(frozen=True)
class Limits:
    """The limits table (see the module docstring for what each field bounds)."""

    # numbers a user sets
    seed: Range = Range(0, 2**32 - 1, integer=True)
    psi: Range = Range(-1.0, 2.0, step=0.05)
    lr: Range = Range(0.0, 1.0, lo_open=True, step=1e-4)
    max_steps: Range = Range(1, 2000, integer=True)
    render_every: Range = Range(0, 1000, integer=True, page_hi=20)   # 0: the live view is timed by the policy
    mask_lambda: Range = Range(0.0, 1e4, step=1.0)
    inversion_steps: Range = Range(0, 5000, integer=True)
    # sizes and counts
    point_pairs: int = 64
    points_depth: int = 3
    points_bytes: int = 64 * 1024
    drags: int = 200
    recipe_bytes: int = 4 * 2**20
    recipe_depth: int = 8
    image_side: int = 2048
    mask_pixels: int = 256 * 2**20
    label_chars: int = 200
    name_chars: int = 32


LIMITS = Limits()
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET_RE = re.compile(r"[\[\]{}]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 4


def short(value: Any) -> str:
    """A bounded repr of untrusted input for error messages (never the whole of a huge value)."""
    return _SHORT.repr(value)


def check_number(name: str, value: Any, limits: Limits = LIMITS, label: str | None = None) -> float | int:
    """`value` as a number inside `limits.<name>` (an int for integer ranges); `LimitError` otherwise, its
    message naming `label` (default: `name`)."""
    bounds: Range = getattr(limits, name)
    field, name = name, label or name
    if isinstance(value, bool):
        raise LimitError(field, f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise LimitError(field, f"{name} must be a number, got {short(value)}") from None
    if not math.isfinite(number):
        raise LimitError(field, f"{name} must be a finite number, got {number}")
    if number < bounds.lo or (bounds.lo_open and number == bounds.lo) or number > bounds.hi:
        raise LimitError(field, f"{name} must be {bounds.describe()}, got {_text(number)}")
    if bounds.integer:
        if number != int(number):
            raise LimitError(field, f"{name} must be a whole number, got {number:g}")
        return int(number)
    return number


def number_or_none(name: str, value: Any, limits: Limits = LIMITS) -> float | int | None:
    """`check_number`'s value, or None where it would refuse (a field still being typed: nothing to say yet)."""
    try:
        return check_number(name, value, limits)
    except LimitError:
        return None


def check_name(name: str, value: Any, limits: Limits = LIMITS) -> str:
    """A short lower-case identifier (letters, digits, `_.-`), e.g. a tracker name."""
    if not isinstance(value, str) or len(value) > limits.name_chars or not _NAME_RE.match(value):
        raise LimitError(name, f"{name} must be a short lower-case name (at most {limits.name_chars} letters, "
                               f"digits or _.-), got {short(value)}")
    return value


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in JSON `text`, counted without parsing it (brackets in strings
    are ignored). Unbalanced text gives whatever depth it reaches; the parser refuses it afterwards."""
    depth = deepest = 0
    for match in _BRACKET_RE.finditer(_STRING_RE.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_depth(name: str, value: Any, max_depth: int) -> None:
    """Refuse a list/tuple/dict structure nested deeper than `max_depth` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > max_depth:
            raise LimitError(name, f"{name} is nested too deeply (more than {max_depth} levels)")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))


def load_json(name: str, text: str, max_bytes: int, max_depth: int) -> Any:
    """Parse JSON `text` after checking its size and nesting depth, so a hostile text costs no recursion."""
    if len(text) > max_bytes:
        raise LimitError(name, f"{name} is larger than {max_bytes} bytes")
    if json_depth(text) > max_depth:
        raise LimitError(name, f"{name} is nested too deeply (more than {max_depth} levels)")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LimitError(name, f"{name} is not valid JSON ({str(exc)[:80]})") from None


def _coordinate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            raise LimitError("points", f"{what} must be a number, got {short(value)}") from None
    number = float(value)
    if not math.isfinite(number):
        raise LimitError("points", f"{what} must be a finite number, got {number}")
    return number


def check_pair_count(count: int, limits: Limits = LIMITS) -> None:
    if count > limits.point_pairs:
        raise LimitError("points", f"at most {limits.point_pairs} point pairs per drag, got {count}")


def parse_points(points: Any, limits: Limits = LIMITS) -> tuple[list[Point], list[Point]]:
    """Handles and targets from `[[hx, hy, tx, ty], ...]`, `[[[hx, hy], [tx, ty]], ...]` or that as JSON text.

    Size, depth and count are checked before any element is read; every coordinate must be finite.
    """
    if isinstance(points, str):
        points = load_json("points", points, limits.points_bytes, limits.points_depth)
    if not isinstance(points, (list, tuple)):
        raise LimitError("points", "points must be a list of [hx, hy, tx, ty] pairs")
    check_pair_count(len(points), limits)
    check_depth("points", points, limits.points_depth)
    handles, targets = [], []
    for i, item in enumerate(points, 1):
        if isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(p, (list, tuple)) for p in item):
            flat = [*item[0], *item[1]] if len(item[0]) == len(item[1]) == 2 else []
        else:
            flat = list(item) if isinstance(item, (list, tuple)) else []
        if len(flat) != 4:
            raise LimitError("points", f"point pair {i} must be [hx, hy, tx, ty] (numbers), got {short(item)}")
        hx, hy, tx, ty = (_coordinate(v, f"point pair {i}: {axis}")
                          for v, axis in zip(flat, ("hx", "hy", "tx", "ty")))
        handles.append((hx, hy))
        targets.append((tx, ty))
    if not handles:
        raise LimitError("points", "give at least one handle/target pair")
    return handles, targets


def check_points(handles: Sequence[Point], targets: Sequence[Point], height: int, width: int,
                 limits: Limits = LIMITS) -> None:
    """Refuse a drag whose points are missing, unpaired, too many, not finite or outside the image."""
    if not handles:
        raise LimitError("points", "Click the image to add a handle point, then its target, before pressing Start.")
    if len(handles) != len(targets):
        raise LimitError("points", f"Point {len(handles)} has a handle but no target: click where it should go, "
                                   f"or remove it.")
    check_pair_count(len(handles), limits)
    for i, (x, y) in enumerate(list(handles) + list(targets)):
        kind = "handle" if i < len(handles) else "target"
        if not (math.isfinite(x) and math.isfinite(y)):
            raise LimitError("points", f"A {kind} ({x:g}, {y:g}) is not a finite point.")
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise LimitError("points", f"A {kind} ({x:g}, {y:g}) is outside the {width}×{height} image.")
