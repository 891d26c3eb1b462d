"""What a drag costs on this hardware, in wall seconds, before the visitor presses Start.

`drag_seconds` reads the costs `render_costs.py` records (a drag step, the preview and the exact render of each
synthesis network) and applies the render policy's shares; `measure` records them with a throwaway drag of a
few steps when nothing was recorded yet (the app does this for its start model at start-up, so the status line
can say "a 100-step drag ≈ 20 s on this CPU" before any visitor dragged).
"""

from __future__ import annotations

import torch

from . import render_costs
from .render_policy import RenderPolicy
from .config import DragConfig
from .session import DragSession


def drag_seconds(synthesis: torch.nn.Module, steps: int, policy: RenderPolicy | None = None) -> float | None:
    """The wall time of a `steps`-step drag as the app runs it (under `policy`, the app's default when None),
    from the recorded costs; None until a step was recorded. The live view takes the policy's `share` of the
    time, more (up to `max_share`) where a preview every `max_age_s` costs more than that, and the run ends
    with one exact render."""
    policy = policy or RenderPolicy()
    step = render_costs.cost(synthesis, "step")
    if step is None:
        return None
    full = render_costs.cost(synthesis, "full") or 0.0
    view = render_costs.cost(synthesis, "preview" if policy.preview else "full") or full
    fraction = min(policy.max_share, max(policy.share, view / policy.max_age_s))
    return steps * step / (1.0 - fraction) + full


def measure(G: torch.nn.Module, steps: int = 4) -> float:
    """Record what a drag of `G` costs here, by a throwaway drag of `steps` steps (one handle pulled across the
    image, as the app runs it: its closing exact render and, where the device has one, a preview); returns the
    seconds per step. The generator is only read. A two-step drag runs first and its figures are forgotten:
    the first steps and renders of a network in a process prepare their kernels (at 128 px on a CPU the
    first step costs ~5 steps), and counted they would state a drag at several times its cost."""
    h, w = G.img_height, G.img_width
    for run_steps in (2, steps):
        render_costs.forget(G.synthesis)
        session = DragSession(G, seed=0, psi=0.7, config=DragConfig(space="w+"))
        session.set_points(handles=[(w * 0.4, h * 0.5)], targets=[(w * 0.9, h * 0.5)])
        for _ in session.run(max_steps=run_steps, render_every=0):
            pass
        if session.has_preview:
            session.render(preview=True)
    return float(render_costs.cost(G.synthesis, "step"))
