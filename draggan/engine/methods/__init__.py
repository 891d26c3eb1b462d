"""The drag methods, by name: one module each, behind the `DragMethod` protocol (`base.py`).

`METHODS` is the one registry: `DragConfig.tracker` names one of its keys, and the page (menu labels and
help), the status text, recipes (names) and `bench.drag_quality` (choices) all read it. To add a method,
write one module with a class implementing `DragMethod` and add it to `_KEPT` below: nothing else changes.

A name retired from the registry stays readable in recipes: `resolve` maps it to the kept method whose
`replaces` lists it, with one line saying so.
"""

from __future__ import annotations

from .base import DragGeometry, DragMethod
from .freedrag_local import FreeDragLocal
from .freedrag_ms import FreeDrag
from .official import Official

_KEPT: tuple[type[DragMethod], ...] = (Official, FreeDrag, FreeDragLocal)

METHODS: dict[str, type[DragMethod]] = {m.name: m for m in _KEPT}
DEFAULT = Official.name


def names() -> tuple[str, ...]:
    """Every registered method's name, in menu order."""
    return tuple(METHODS)


def get(name: str) -> type[DragMethod]:
    """The method class registered as `name` (ValueError naming the choices otherwise)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"drag method must be one of {', '.join(METHODS)}, got {str(name)[:40]!r}") from None


def resolve(name: str) -> tuple[str, str | None]:
    """`name` if it is registered, else the kept method that replaces the retired `name` and one line saying
    so; an unknown name is returned as it is (the engine refuses it, naming the choices)."""
    if name in METHODS:
        return name, None
    for method in METHODS.values():
        if name in method.replaces:
            return method.name, (f"the drag method {name!r} was retired; replayed with {method.name!r}, the "
                                 f"nearest kept one (the image can differ from the original)")
    return name, None


def choices() -> list[tuple[str, str]]:
    """(label, name) of every method, for a menu."""
    return [(m.label, m.name) for m in METHODS.values()]


__all__ = ["DEFAULT", "METHODS", "DragGeometry", "DragMethod", "choices", "get", "names", "resolve"]
