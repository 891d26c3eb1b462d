"""What a drag of a generator costs here: measured seconds per synthesis network of a step and of each render.

A drag's render policy (render_policy.py) decides from times, and a run that starts knowing the cost of a
render neither spends a render right after its first step only to measure it (the view was fresh when the
drag started) nor shows a closing preview that the exact image would follow soon enough anyway. Each render
the session does is recorded here, for the process's lifetime and per network (weakly held: a network that
is let go takes its entry with it), as a moving average over its last renders. In a forked worker (ZeroGPU)
nothing recorded there comes back, so there every run starts not knowing, as before.

The same record holds the drag step ("step", recorded by every run), from which `drag_cost.py` states what a
drag costs on this hardware before the visitor presses Start.
"""

from __future__ import annotations

import threading
import weakref

import torch

_ALPHA = 0.5
_costs: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, float]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


KINDS = ("preview", "full", "step")


def record(synthesis: torch.nn.Module, kind: str, seconds: float) -> None:
    """Record a render of `kind` ("preview" or "full"), or a drag "step", of `synthesis` that took `seconds`."""
    assert kind in KINDS, kind
    with _lock:
        costs = _costs.setdefault(synthesis, {})
        old = costs.get(kind)
        costs[kind] = seconds if old is None else (1 - _ALPHA) * old + _ALPHA * seconds


def forget(synthesis: torch.nn.Module) -> None:
    """Drop everything recorded of `synthesis` (what a warm-up's first, slower runs measured)."""
    with _lock:
        _costs.pop(synthesis, None)


def cost(synthesis: torch.nn.Module, kind: str) -> float | None:
    """The recent seconds of a render of `kind` of `synthesis`, or None when none was recorded."""
    with _lock:
        return _costs.get(synthesis, {}).get(kind)

