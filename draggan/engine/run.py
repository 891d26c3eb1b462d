"""A drag run: `DragSession.step()` until the handles arrive, a step limit, a stop or a time budget, with the
images it shows on the way (render scheduling).

Without a render policy the image is rendered in full every `render_every` steps. With one
(`render_policy.py`) it is rendered when the policy says so, from measured step and render times (recorded
in `render_costs.py`): a preview when `policy.preview` and the session has one, `image_kind` saying which.
The last result always carries the exact full render (`image_kind` "full") and says why the run ended
(`end`); a previewing policy yields that last step once before, with its preview, so that the view shows
where the drag ended without waiting for the exact render (unless that render's known cost keeps the view
within its age). A stop that arrives between steps yields one extra result repeating the last step, with the
image. The run's end is one history entry, except when the budget ended it: then the next run continues the
same drag as if never interrupted (the whole drag becomes one entry when it really ends).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Iterator, Protocol

import numpy as np

from . import render_costs
from .render_policy import RenderPolicy, RenderSchedule
from .step import StepResult


class Session(Protocol):
    """What a run needs of a `DragSession`."""

    G: Any
    has_preview: bool

    def step(self) -> StepResult: ...
    def commit(self) -> None: ...
    def render(self) -> np.ndarray: ...
    def view(self, preview: bool) -> tuple[np.ndarray, str]: ...
    def view_kind(self, preview: bool) -> str: ...


def run_drag(session: Session, limit: int, render_every: int, stop: threading.Event,
             stop_event: threading.Event | None, policy: RenderPolicy | None,
             budget_s: float | None) -> Iterator[StepResult]:
    """The results of one run of `session` (see the module docstring and `DragSession.run`)."""

    def stopping() -> bool:
        return stop.is_set() or (stop_event is not None and stop_event.is_set())

    synthesis = session.G.synthesis
    started = time.perf_counter()
    schedule = None
    if policy is not None:
        schedule = policy.start(started, render_costs.cost(synthesis, session.view_kind(policy.preview)))
    last = None
    paused = False
    try:
        for i in range(limit):
            if stopping():
                break
            result = session.step()
            render_costs.record(synthesis, "step", result.seconds)
            last = result
            elapsed = time.perf_counter() - started
            stopped = stopping()
            paused = (budget_s is not None and not result.done and i < limit - 1 and not stopped
                      and elapsed * (i + 2) / (i + 1) > budget_s)
            final = result.done or i == limit - 1 or stopped or paused
            if final:
                yield from _closing_preview(session, result, schedule, policy)
                result.end = ("arrived" if result.done else "stopped" if stopped
                              else "budget" if paused else "limit")
                result.image, result.image_kind = session.render(), "full"
            elif schedule is not None:
                if schedule.step_done(time.perf_counter(), result.seconds):
                    result.image, result.image_kind = _scheduled_view(session, schedule, policy.preview)
            elif render_every > 0 and (i + 1) % render_every == 0:
                result.image, result.image_kind = session.render(), "full"
            if final:
                if not paused:
                    session.commit()
                yield result
                return
            yield result
        if last is not None:
            session.commit()
            yield from _closing_preview(session, last, schedule, policy)
            yield dataclasses.replace(last, image=session.render(), image_kind="full", end="stopped")
    finally:
        if not paused:
            session.commit()


def _closing_preview(session: Session, result: StepResult, schedule: RenderSchedule | None,
                     policy: RenderPolicy | None) -> Iterator[StepResult]:
    """Before a previewing run's exact closing render, a copy of its last result with the preview of where
    the drag ended — unless the exact image, at its known cost, will come within the policy's view age."""
    if schedule is None or not policy.preview or not session.has_preview:
        return
    full_s = render_costs.cost(session.G.synthesis, "full")
    if full_s is not None and time.perf_counter() - schedule.view_time + full_s <= policy.max_age_s:
        return
    image, kind = _scheduled_view(session, schedule, True)
    yield dataclasses.replace(result, image=image, image_kind=kind, end=None)


def _scheduled_view(session: Session, schedule: RenderSchedule, preview: bool) -> tuple:
    """`session.view(preview)`, its time told to the run's render `schedule`."""
    t0 = time.perf_counter()
    view = session.view(preview)
    schedule.rendered(time.perf_counter(), time.perf_counter() - t0)
    return view
