"""Per-browser-session state of the editor: one `UIState` lives in a `gr.State` for each open page.

It owns the session's `DragSession`, the points being placed, the masks, the record of finished drags
(for undo/redo, the animation and the edit recipe) and the background drag job, if any. The generator it
points at is shared read-only with every other session of the process.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any

import numpy as np

from ..export import DragRecord

Point = tuple[float, float]
MAX_FRAMES_PER_DRAG = 240


@dataclasses.dataclass
class DragParams:
    """Optimisation settings the user can change between drags without resetting the image."""

    lr: float = 1e-3
    max_steps: int = 200
    render_every: int = 2
    mask_lambda: float = 20.0


@dataclasses.dataclass
class FinishedDrag:
    """A drag that ran: its recipe entry and the frames it rendered (for the GIF/MP4)."""

    record: DragRecord
    frames: list[np.ndarray]


class DragJob:
    """One drag running in a background thread, so a dropped browser connection or a cancelled event never
    leaves the session half-updated: the thread always finishes the run and records its result itself."""

    def __init__(self, ui: "UIState", record: DragRecord, render_every: int) -> None:
        self.ui = ui
        self.record = record
        self.render_every = render_every
        self.results: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.steps = 0
        self.moved = False
        self.count = 0
        self.last: Any = None
        self.frames: list[np.ndarray] = []
        self.started = time.perf_counter()
        self.thread = threading.Thread(target=self._work, name="draggan-drag", daemon=True)

    def start(self) -> "DragJob":
        self.thread.start()
        return self

    def _work(self) -> None:
        from ..export import run_drag

        session = self.ui.session

        def on_step(r: Any) -> None:
            self.last = r
            self.count += 1
            self.moved = self.moved or not r.done
            image = getattr(r, "image", None)
            if image is not None:
                with self.ui.lock:
                    self.ui.image = image
                    self.ui.handles = [tuple(p) for p in r.handles]
                    if len(self.frames) < MAX_FRAMES_PER_DRAG:
                        self.frames.append(image)
            self.results.put(r)

        try:
            self.steps = run_drag(session, self.record, on_step=on_step, render_every=self.render_every,
                                  stop_event=self.stop_event)
        except Exception as exc:  # shown to the user by the handler that follows the job
            self.error = exc
        finally:
            self._finish(session)
            self.done.set()
            self.results.put(None)

    def _finish(self, session: Any) -> None:
        image = session.render()
        with self.ui.lock:
            self.ui.image = image
            self.ui.handles = [tuple(p) for p in session.handles]
            self.ui.targets = [tuple(p) for p in session.targets]
            if self.moved:
                record = dataclasses.replace(self.record, steps=self.steps)
                self.ui.history.append(FinishedDrag(record=record, frames=self.frames + [image]))
                self.ui.redo_stack.clear()
            self.ui.job = None

    def stop(self) -> None:
        """Ask the run to end after the current step (thread-safe)."""
        self.stop_event.set()
        self.ui.session.stop()

    @property
    def running(self) -> bool:
        return not self.done.is_set()


@dataclasses.dataclass
class UIState:
    """Everything one browser session owns."""

    model_source: str
    model_label: str
    G: Any
    seed: int
    psi: float
    space: str
    session: Any
    image: np.ndarray
    start_image: np.ndarray
    params: DragParams = dataclasses.field(default_factory=DragParams)
    handles: list[Point] = dataclasses.field(default_factory=list)
    targets: list[Point] = dataclasses.field(default_factory=list)
    fixed_mask: np.ndarray | None = None
    flexible_mask: np.ndarray | None = None
    show_mask: bool = True
    history: list[FinishedDrag] = dataclasses.field(default_factory=list)
    redo_stack: list[FinishedDrag] = dataclasses.field(default_factory=list)
    job: DragJob | None = None
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock, repr=False)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def running(self) -> bool:
        job = self.job
        return job is not None and job.running

    def __deepcopy__(self, memo: dict) -> "UIState":
        # gr.State deep-copies its value per session; a UIState is only ever created per session, so the
        # copy is the object itself (the generator inside must never be copied).
        return self
