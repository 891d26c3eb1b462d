"""A per-user drag session: the owner of a drag's state, with stop/resume and undo/redo.

One `DragSession` owns its latent, points, mask, history and the drag under way; the generator is only
read (never modified, no parameter gradients), so many sessions can share one generator and run in parallel
threads. Public points are (x, y) image pixels; internally they are (row, col) = (y, x).

The jobs around it, one file each: the settings (`config.py`), one optimisation step (`step.py`: feature
windows and losses, the drag method's tracking and motion loss, `methods/`), a run of steps with the images
it shows (`run.py`), and the state as plain data with every edit that needs no generator (`snapshot.py`:
points, mask, history; the session applies the same functions to itself, one implementation of each rule).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Iterator, Sequence

import numpy as np
import torch

from ..images import to_uint8
from . import render_costs
from . import snapshot as snapshots
from .config import DragConfig, Point
from .render_policy import RenderPolicy
from .run import run_drag
from .snapshot import DragSnapshot
from .step import ActiveDrag, DragStep, FixedRegion, StepResult


class DragSession:
    """Drag handle points to targets on one generator by optimising the latent (see module docstring)."""

    def __init__(self, G: torch.nn.Module, seed: int = 0, psi: float = 0.7, w: torch.Tensor | np.ndarray | None = None,
                 config: DragConfig | None = None) -> None:
        self.G = G
        cfg = config if config is not None else DragConfig()
        self.height = int(G.img_height)
        self.width = int(G.img_width)
        tensors = list(G.parameters()) + list(G.buffers())
        self.device = tensors[0].device if tensors else torch.device("cpu")
        # Render with the network's direct forms (exact image and preview; StyleGAN2 on CPU), else with
        # `synthesis(ws)` as on a GPU; False on a CPU session runs the GPU's render path (tests do).
        self.direct_render: bool = G.synthesis.direct_render_supported(self.device)
        w0 = self._start_latent(seed, psi, w)
        n_opt = min(cfg.num_layers, int(G.num_ws))
        self._w_start = (w0[:, :n_opt] if cfg.space == "w+" else w0[:, :1]).detach().clone()
        self._step = DragStep(G, cfg, w0, n_opt)
        self.feature_block, self.feature_shape = self._step.feature_block, self._step.feature_shape
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._load(snapshots.start(cfg, w0.cpu().numpy(), self._w_start.cpu().numpy(), self.height, self.width))

    @classmethod
    def from_snapshot(cls, G: torch.nn.Module, snap: DragSnapshot) -> "DragSession":
        """A session on G that continues exactly where `snap` (from `snapshot()`, maybe in another process)
        left off. No mapping or synthesis runs."""
        if (int(G.img_height), int(G.img_width)) != (snap.height, snap.width):
            raise ValueError(f"the snapshot is of a {snap.width}×{snap.height} image; this generator makes "
                             f"{G.img_width}×{G.img_height}")
        session = cls(G, w=snap.w0, config=snap.config)
        session._load(snap)
        return session

    def _start_latent(self, seed: int, psi: float, w: torch.Tensor | np.ndarray | None) -> torch.Tensor:
        """[1, num_ws, w_dim] float32: given w (one code or per-layer codes), or mapping(seed's z, ψ)."""
        num_ws, w_dim = int(self.G.num_ws), int(self.G.w_dim)
        with torch.no_grad():
            if w is None:
                ws = self.G.latent_from_seed(seed, psi)
            else:
                ws = torch.as_tensor(np.asarray(w) if isinstance(w, np.ndarray) else w).to(self.device)
                ws = ws.reshape(-1, w_dim)
                if ws.shape[0] == 1:
                    ws = ws.repeat(num_ws, 1)
                if ws.shape[0] != num_ws:
                    raise ValueError(f"w must hold 1 or {num_ws} codes of size {w_dim}")
                ws = ws[None]
        return ws.detach().to(torch.float32).clone()

    # ------------------------------------------------------------------ state

    def snapshot(self) -> DragSnapshot:
        """The whole state as plain picklable data (latents, points, mask, history, the drag under way)."""
        with self._lock:
            return dataclasses.replace(self._state, w=self._w.detach().cpu().numpy().copy(),
                                       handles=tuple(self._handles), dirty=self._dirty,
                                       drag=None if self._drag is None else self._drag.progress())

    def _load(self, snap: DragSnapshot) -> None:
        """Make `snap` the session's state (live tensors on the generator's device)."""
        with self._lock:
            if tuple(snap.w.shape) != tuple(self._w_start.shape):
                raise ValueError(f"snapshot latent {tuple(snap.w.shape)} does not fit {tuple(self._w_start.shape)}")
            self._state = snap
            self._w = torch.as_tensor(snap.w, dtype=torch.float32).to(self.device).clone().requires_grad_(True)
            self._handles = list(snap.handles)     # moved by every step; the rest of the state by edits only
            self._dirty = snap.dirty
            self._drag = None if snap.drag is None else ActiveDrag(self._w, snap.drag)
            self._fixed: FixedRegion | None = None
            if snap.mask is not None:
                self._fixed = self._step.fixed_region(torch.as_tensor(snap.mask).to(self.device))

    def _apply(self, edit, *args) -> None:
        with self._lock:
            self._load(edit(self.snapshot(), *args))

    def _current(self) -> DragSnapshot:
        """The state's history and flags as they stand (no latent copied)."""
        return dataclasses.replace(self._state, dirty=self._dirty)

    @property
    def config(self) -> DragConfig:
        return self._state.config

    def update_config(self, **changes) -> None:
        """Change drag settings (validated): lr and the drag method apply from the next drag, mask_lambda from
        the next step; the latent space, feature block, layer count and noise mode are fixed for a session."""
        self._apply(lambda snap: snapshots.with_config(snap, **changes))

    def set_points(self, handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> None:
        """Set handle and target points (x, y) in image pixels; starts a new drag."""
        self._apply(snapshots.set_points, handles, targets)

    def set_mask(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Region that must stay fixed ([H, W], 1 = fixed); None clears it. As in the official code the term
        applies only when the mask holds both 0 and 1."""
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        self._apply(snapshots.set_mask, mask)

    @property
    def ws(self) -> torch.Tensor:
        """Current latent [1, num_ws, w_dim] (a detached copy)."""
        with self._lock:
            return self._step.compose(self._w.detach()).clone()

    @property
    def handles(self) -> list[Point]:
        with self._lock:
            return list(self._handles)

    @property
    def targets(self) -> list[Point]:
        return list(self._state.targets)

    @property
    def mask(self) -> np.ndarray | None:
        with self._lock:
            return None if self._state.mask is None else self._state.mask.copy()

    @property
    def steps(self) -> int:
        """Steps taken in the current drag."""
        with self._lock:
            return 0 if self._drag is None else self._drag.steps

    # ------------------------------------------------------------------ dragging

    def step(self) -> StepResult:
        """One optimisation step (`step.py`): point tracking, then (unless every handle arrived) a latent update."""
        with self._lock, torch.enable_grad():
            t0 = time.perf_counter()
            if not self._handles:
                raise RuntimeError("set_points() first: there is nothing to drag")
            if self._drag is None:
                self._apply(snapshots.begin_drag)
            result = self._step(self._drag, self._w, self._state.targets, self._fixed, self.config.mask_lambda)
            self._handles = list(result.handles)
            self._dirty = self._dirty or not result.done
            result.seconds = time.perf_counter() - t0
            return result

    def run(self, max_steps: int | None = None, render_every: int = 5,
            stop_event: threading.Event | None = None,
            policy: RenderPolicy | None = None, budget_s: float | None = None) -> Iterator[StepResult]:
        """Step until every handle arrives, `max_steps` steps were taken or a stop was requested, yielding
        every StepResult and the images of `run.py`'s schedule: with a `policy` when it says so, else in full
        every `render_every` steps; the last result carries the exact image and says why the run ended.
        `budget_s` bounds the run's wall time (a ZeroGPU grant): the run ends ("budget") before a step that
        would probably not finish within it. Call run() again to resume (the drag state is kept)."""
        limit = self.config.max_steps if max_steps is None else int(max_steps)
        self._stop.clear()  # here, not in the generator body: a stop() right after run() must count
        return run_drag(self, limit, render_every, self._stop, stop_event, policy, budget_s)

    def stop(self) -> None:
        """Ask a running `run()` to return after its current step (safe from any thread)."""
        self._stop.set()

    # ------------------------------------------------------------------ images

    def render(self, preview: bool = False) -> np.ndarray:
        """The image of the current latent, uint8 [H, W, 3]: the exact full synthesis (no grad; on CPU for
        StyleGAN2 its direct float32 form), or with `preview` the cheaper preview where `has_preview`, else
        the full one."""
        return self.view(preview)[0]

    @property
    def has_preview(self) -> bool:
        """Whether `render(preview=True)` is a preview cheaper than the full render on this device."""
        return self.direct_render

    def view_kind(self, preview: bool) -> str:
        """The kind of image `render(preview)` gives here: "preview" where this device has one, else "full"."""
        return "preview" if preview and self.has_preview else "full"

    def view(self, preview: bool) -> tuple[np.ndarray, str]:
        """The image of the current latent and its kind, "preview" or "full" (its time is recorded in
        render_costs.py)."""
        t0 = time.perf_counter()
        ws, synthesis, noise_mode = self.ws, self.G.synthesis, self.config.noise_mode
        kind = self.view_kind(preview)
        if self.direct_render:
            img = synthesis.render_direct(ws, noise_mode, preview=kind == "preview")
        else:
            with torch.no_grad():
                img = synthesis(ws, noise_mode=noise_mode)
        image = to_uint8(img)
        render_costs.record(synthesis, kind, time.perf_counter() - t0)
        return image, kind

    # ------------------------------------------------------------------ history (rules: snapshot.py)

    def commit(self) -> None:
        """Record the current state as a new history entry if the latent moved since the last one (`run()`
        does this when it ends; callers stepping with `step()` say when their drag is over)."""
        with self._lock:
            if self._dirty:
                self._apply(snapshots.commit)

    @property
    def can_undo(self) -> bool:
        with self._lock:
            return self._current().can_undo

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return self._current().can_redo

    def undo(self) -> bool:
        """Go back to the state before the last drag (latent and points). Returns False if there is none."""
        with self._lock:
            snap = snapshots.undo(self.snapshot())
            if snap is None:
                self.commit()
                return False
            self._load(snap)
            return True

    def redo(self) -> bool:
        """Re-apply the drag undone last. Returns False if there is none."""
        with self._lock:
            snap = snapshots.redo(self.snapshot())
            if snap is None:
                return False
            self._load(snap)
            return True

    def reset(self) -> None:
        """Back to the start latent; clears points, history and the current drag (the mask is kept)."""
        self._apply(snapshots.reset)
