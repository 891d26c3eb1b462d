"""Per-browser-session state of the editor: one `UIState` lives in a `gr.State` for each open page.

It owns the session's `DragSession`, the points being placed, the masks, the record of finished drags
(for undo/redo, the animation and the edit recipe) and the background drag or photo-inversion job, if any.
The generator it points at is shared read-only with every other session of the process, except after a photo
inversion: then it is the session's own tuned copy (`UIState.photo` is set), which no other session sees.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any, Callable

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
class PhotoStart:
    """How a session's start image was made from a photo: the prepared target and the inversion's quality."""

    name: str                 # the uploaded file's name, for the stats line and exported file names
    target: np.ndarray        # uint8 [H, W, 3]: the photo as the generator was fitted to it (cropped, resized)
    w: Any                    # [1, num_ws, w_dim] the inverted latent (the drag's start), on the CPU
    psnr: float
    lpips: float | None
    loss_name: str
    loss_note: str | None
    steps: int
    seconds: float


class InversionJob:
    """One photo inversion running in a background thread (the `DragJob` pattern): the thread always ends by
    handing its result to `on_result` (which installs it in the session) or by recording why it did not.

    `G` is the shared generator; it is only read. Cancel sets `cancel_event`, which the inversion checks before
    every step, so the thread ends within one step and the session keeps its previous image.
    """

    def __init__(self, ui: "UIState", G: Any, target: np.ndarray, config: Any, name: str,
                 on_result: Callable[[Any], None]) -> None:
        self.ui = ui
        self.G = G
        self.target = target
        self.config = config
        self.name = name
        self.on_result = on_result
        self.total_steps = int(config.total_steps)
        self.events: queue.Queue = queue.Queue()
        self.cancel_event = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.cancelled = False
        self.result: Any = None
        self.last: Any = None                  # the latest InversionProgress
        self.preview: np.ndarray | None = None  # the latest preview image
        self.started = time.perf_counter()
        self.first_step_at: float | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._work, name="draggan-invert", daemon=True)

    def start(self) -> "InversionJob":
        self.thread.start()
        return self

    def _progress(self, event: Any) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        self.last = event
        if event.preview is not None:
            self.preview = event.preview
        self.events.put(event)

    def _work(self) -> None:
        from ..inversion import InversionCancelled, invert

        try:
            self.result = invert(self.G, self.target, self.config, progress=self._progress, cancel=self.cancel_event)
            self.on_result(self.result)
        except InversionCancelled:
            self.cancelled = True
        except Exception as exc:  # shown to the user by the handler that follows the job
            self.error = exc
        finally:
            self.ended_at = time.perf_counter()
            with self.ui.lock:
                self.ui.inversion = None
            self.done.set()
            self.events.put(None)

    def cancel(self) -> None:
        """Ask the inversion to end before its next step (thread-safe)."""
        self.cancel_event.set()

    def seconds_per_step(self) -> float | None:
        """Measured time per optimisation step (None before the second step)."""
        last = self.last
        if last is None or self.first_step_at is None or last.step < 2:
            return None
        now = self.ended_at if self.ended_at is not None else time.perf_counter()
        return (now - self.first_step_at) / (last.step - 1)

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
    photo: PhotoStart | None = None           # set when the start image is an inverted photo
    inversion: InversionJob | None = None     # a photo inversion in progress
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

    @property
    def inverting(self) -> bool:
        job = self.inversion
        return job is not None and job.running

    def __deepcopy__(self, memo: dict) -> "UIState":
        # gr.State deep-copies its value per session; a UIState is only ever created per session, so the
        # copy is the object itself (the generator inside must never be copied).
        return self
