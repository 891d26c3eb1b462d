"""Per-browser-session state of the editor: one `UIState` lives in a `gr.State` for each open page.

The drag itself — latent, points, mask, history, the drag under way — is the engine's `DragSnapshot` (`snap`),
its only owner; the accelerator functions (`gpu.py`) take it and return a new one, which replaces it here.
`UIState` keeps only what is UI: which model (a `ModelRef`), the seed and ψ it started from, the images
shown, a handle clicked but not yet given its target, the masks as painted, display options, the frames of
each drag for the animation (by history entry id), the photo an image came from, and the job that is running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..engine import RenderPolicy
from ..engine.snapshot import DragSnapshot, Point
from .gpu import StopFlag
from .models import ModelRef

MAX_FRAMES_PER_DRAG = 120           # frames kept for the animation of one drag (the last image always is)
MAX_FRAME_BYTES = 96 * 2**20        # all frames of a session; past it the oldest drags keep first and last only
DEFAULT_RENDER_EVERY = 0          # 0: the live view follows `RenderPolicy` (time-based); k > 0: every k steps


@dataclasses.dataclass
class PhotoStart:
    """How a session's start image was made from a photo: the prepared target and the inversion's quality."""

    name: str                 # the uploaded file's name, for the stats line and exported file names
    base: ModelRef            # the model the tuned copy was made from
    target: np.ndarray        # uint8 [H, W, 3]: the photo as the generator was fitted to it (cropped, resized)
    w: np.ndarray             # [1, num_ws, w_dim] the inverted latent (the drag's start)
    psnr: float
    lpips: float | None
    loss_name: str
    loss_note: str | None
    steps: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class PreparedUpload:
    """A photo upload as checked and cropped when it arrived, so that Invert fits the model to this very crop
    without decoding the upload again."""

    photo: str                # the uploaded file
    face_align: bool
    base: ModelRef            # the model it was cropped for
    target: np.ndarray        # uint8 [H, W, 3]


@dataclasses.dataclass
class Job:
    """What is running for this session (one at a time): a drag, an inversion or a recipe replay."""

    kind: str                         # "drag", "inversion" or "replay"
    stop: StopFlag
    started: float = dataclasses.field(default_factory=time.perf_counter)
    last: Any = None                  # the latest update (gpu.DragUpdate, InversionProgress, ...)
    steps: int = 0                    # steps taken by this job
    goal: int = 0                     # a drag's step count at which it stops (counted from the drag's first step)
    limit: int = 0                    # steps this run may take (its step limit); `steps` counts the same run
    view_kind: str = ""               # what the image shown is: "preview" or "full"
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass
class InversionJob(Job):
    """A photo inversion: what is inverted, and how it went."""

    target: np.ndarray | None = None  # uint8 [H, W, 3] the prepared photo
    config: Any = None                # InversionConfig
    name: str = "photo"
    total_steps: int = 0
    preview: np.ndarray | None = None
    first_step_at: float | None = None
    ended_at: float | None = None
    result: Any = None                # gpu.InversionDone on success
    error: BaseException | None = None
    cancelled: bool = False

    def seconds_per_step(self) -> float | None:
        """Measured time per optimisation step (None before the second step)."""
        last = self.last
        if last is None or self.first_step_at is None or last.step < 2:
            return None
        now = self.ended_at if self.ended_at is not None else time.perf_counter()
        return (now - self.first_step_at) / (last.step - 1)


@dataclasses.dataclass
class UIState:
    """Everything one browser session owns."""

    model: ModelRef
    device: str                       # where this session's generator runs ("cuda", "cpu", ...)
    seed: int
    psi: float
    snap: DragSnapshot
    image: np.ndarray                 # uint8 [H, W, 3] the image shown
    start_image: np.ndarray
    render_every: int = DEFAULT_RENDER_EVERY
    policy: RenderPolicy = dataclasses.field(default_factory=RenderPolicy)  # when render_every is 0
    pending: Point | None = None      # a handle clicked, waiting for its target
    fixed_mask: np.ndarray | None = None      # bool [H, W] as painted (red)
    flexible_mask: np.ndarray | None = None   # bool [H, W] as painted (green)
    show_mask: bool = True
    points_done: bool = False         # the last drag arrived: its points are shown as done, the next click starts anew
    notice: str = ""                  # the last action's outcome, shown in the status line (not a toast)
    frames: dict[int, list[np.ndarray]] = dataclasses.field(default_factory=dict)  # history entry id → frames
    photo: PhotoStart | None = None   # set when the start image is an inverted photo
    prepared: PreparedUpload | None = None   # the last photo upload, decoded and cropped once
    job: Job | None = None
    workdir: Path | None = None       # this session's private folder (stop flags, exports); removed on release
    files: set[str] = dataclasses.field(default_factory=set)  # Gradio cache files it was sent (owned_files.py)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock, repr=False)
    replaced_by: "UIState | None" = dataclasses.field(default=None, repr=False)  # set by handlers.replace
    # Set once the page was sent this state's first view, when a racing event must answer after it (None: no wait).
    view_sent: threading.Event | None = dataclasses.field(default=None, repr=False)

    @contextlib.contextmanager
    def latest(self) -> Iterator["UIState"]:
        """The session's current state, locked while the block runs: this one, or the state that replaced it
        (a new image) while an event that started on this one was waiting. Two events of one visitor that
        race (the seed box's blur and the click that caused it) thus see each other's outcome."""
        ui = self
        while True:
            while ui.replaced_by is not None:
                ui = ui.replaced_by
            with ui.lock:
                if ui.replaced_by is None:
                    yield ui
                    return

    @property
    def height(self) -> int:
        return int(self.snap.height)

    @property
    def width(self) -> int:
        return int(self.snap.width)

    @property
    def base_model(self) -> ModelRef:
        """The model the visitor picked (for a photo session: the one its tuned copy was made from)."""
        return self.photo.base if self.photo is not None else self.model

    @property
    def space(self) -> str:
        return self.snap.config.space

    @property
    def handles(self) -> list[Point]:
        """Handle points (x, y), the one waiting for its target last."""
        return list(self.snap.handles) + ([self.pending] if self.pending is not None else [])

    @property
    def targets(self) -> list[Point]:
        return list(self.snap.targets)

    @property
    def running(self) -> bool:
        job = self.job
        return job is not None and job.kind in ("drag", "replay") and not job.done.is_set()

    @property
    def inverting(self) -> bool:
        job = self.job
        return job is not None and job.kind == "inversion" and not job.done.is_set()

    def drags_shown(self) -> list[int]:
        """Ids of the history entries (drags) that lead to the image shown, oldest first."""
        snap = self.snap
        return [e.id for e in snap.history[1:snap.hist_idx + 1]]

    def keep_frames(self, entry_id: int, frames: list[np.ndarray]) -> None:
        """Store a drag's frames (at most MAX_FRAMES_PER_DRAG, evenly kept, the last included) and forget the
        frames of entries no longer in the history; past MAX_FRAME_BYTES the oldest drags keep two frames."""
        if len(frames) > MAX_FRAMES_PER_DRAG:
            keep = np.linspace(0, len(frames) - 1, MAX_FRAMES_PER_DRAG).round().astype(int)
            frames = [frames[i] for i in keep]
        live = {e.id for e in self.snap.history}
        self.frames = {k: v for k, v in self.frames.items() if k in live}
        self.frames[entry_id] = frames
        total = sum(f.nbytes for v in self.frames.values() for f in v)
        for key in sorted(self.frames):
            if total <= MAX_FRAME_BYTES:
                break
            old = self.frames[key]
            if len(old) > 2 and key != entry_id:
                total -= sum(f.nbytes for f in old[1:-1])
                self.frames[key] = [old[0], old[-1]]

    def entry_image(self) -> np.ndarray | None:
        """The image of the history entry shown, when its frames are kept (None: it must be rendered)."""
        snap = self.snap
        if snap.hist_idx == 0 and not snap.dirty:
            return self.start_image
        frames = self.frames.get(snap.entry.id)
        return frames[-1] if frames and not snap.dirty else None

    def __deepcopy__(self, memo: dict) -> "UIState":
        # gr.State deep-copies its value per session; a UIState is only ever created per session, so the
        # copy is the object itself.
        return self
