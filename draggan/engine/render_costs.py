"""What a drag of a generator costs here: measured seconds per synthesis network of a step and of each render.

A drag's render policy (render_policy.py) decides from times, and a run that starts knowing the cost of a
render neither spends a render right after its first step only to measure it (the view was fresh when the
drag started) nor shows a closing preview that the exact image would follow soon enough anyway. Each render
the session does is recorded here, for the process's lifetime and per network (weakly held: a network that
is let go takes its entry with it), as a moving average over its last renders. In a forked worker (ZeroGPU)
nothing recorded there comes back, so there every run starts not knowing, as before.

The same record holds the drag step ("step", recorded by every run), so that the page can say what a drag
costs on this hardware before the visitor presses Start (`drag_seconds`; `measure` takes a few steps of a
throwaway drag when nothing was recorded yet, as the app does for its start model at start-up).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING
import weakref

import torch

if TYPE_CHECKING:
    from .render_policy import RenderPolicy

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


def cost(synthesis: torch.nn.Module, kind: str) -> float | None:
    """The recent seconds of a render of `kind` of `synthesis`, or None when none was recorded."""
    with _lock:
        return _costs.get(synthesis, {}).get(kind)


def drag_seconds(synthesis: torch.nn.Module, steps: int, policy: "RenderPolicy | None" = None) -> float | None:
    """The wall time of a `steps`-step drag as the app runs it (under `policy`, the app's default when None),
    from the recorded costs; None until a step was recorded. The live view takes the policy's `share` of the
    time, more (up to `max_share`) where a preview every `max_age_s` costs more than that, and the run ends
    with one exact render."""
    from .render_policy import RenderPolicy

    policy = policy or RenderPolicy()
    step = cost(synthesis, "step")
    if step is None:
        return None
    full = cost(synthesis, "full") or 0.0
    view = cost(synthesis, "preview" if policy.preview else "full") or full
    fraction = min(policy.max_share, max(policy.share, view / policy.max_age_s))
    return steps * step / (1.0 - fraction) + full


def measure(G: torch.nn.Module, steps: int = 4) -> float:
    """Record what a drag of `G` costs here, by a throwaway drag of `steps` steps (one handle pulled across the
    image, as the app runs it: its closing exact render and, where the device has one, a preview); returns the
    seconds per step. The generator is only read."""
    from .session import DragConfig, DragSession

    session = DragSession(G, seed=0, psi=0.7, config=DragConfig(space="w+"))
    h, w = G.img_height, G.img_width
    session.set_points(handles=[(w * 0.4, h * 0.5)], targets=[(w * 0.9, h * 0.5)])
    for _ in session.run(max_steps=steps, render_every=0):
        pass
    if session.has_preview:
        session.render(preview=True)
    return float(cost(G.synthesis, "step"))
