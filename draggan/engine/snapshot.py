"""A drag session's whole state as plain data, and the edits that need no generator.

`DragSnapshot` is what a `DragSession` owns, turned into CPU numpy arrays, tuples and numbers: it pickles,
so it can cross a process boundary (ZeroGPU runs each GPU call in a forked worker whose memory changes never
come back) and live in a browser session's `gr.State` between calls. `DragSession.snapshot()` makes one and
`DragSession.from_snapshot(G, snap)` continues from it, bit for bit (the optimiser state travels too).

Editing points, the mask and the undo history needs no generator, so those edits are pure functions of a
snapshot here, and `DragSession` applies the same functions to itself: one implementation of each rule.

History: entry 0 is the start latent; every drag that moved the latent appends one entry (a resumed drag is
an entry of its own, marked `resume`). `hist_idx` is the entry shown; `dirty` means the latent moved since
that entry was recorded (a drag is under way). Entries carry `DragSummary`, what made them, for recipes.
Points are (x, y) image pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .methods import DEFAULT as DEFAULT_METHOD

Point = tuple[float, float]


@dataclass(frozen=True)
class DragSummary:
    """The drag that produced a history entry: its starting points, settings, mask and step count."""

    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    steps: int
    lr: float
    mask_lambda: float
    mask: np.ndarray | None = None   # float32 [H, W], 1 = fixed, as the drag used it
    resume: bool = False             # continued the previous drag (same points, optimiser state kept)
    tracker: str = DEFAULT_METHOD


@dataclass(frozen=True)
class HistoryEntry:
    """One undo/redo entry: the optimised latent, the points drawn on it and what made it (None: the start)."""

    id: int                          # unique within the session (frames are stored by it)
    w: np.ndarray                    # optimised latent part, float32 [1, n, w_dim]
    handles: tuple[Point, ...]
    targets: tuple[Point, ...]
    drag: DragSummary | None = None


@dataclass(frozen=True)
class DragProgress:
    """A drag under way, kept across stop/resume: its first latent, handle references, tracked points and
    the Adam optimiser's state."""

    w_begin: np.ndarray              # latent of the drag's first step
    ref: np.ndarray | None           # [N, C] handle features of the first step (None before it)
    points_rc: np.ndarray            # int64 [N, 2] tracked handles, (row, col)
    steps: int                       # steps taken in this drag
    start_handles: tuple[Point, ...]
    adam: dict[str, Any]             # {"step": float, "exp_avg": array, "exp_avg_sq": array} or {} before a step
    lr: float
    run_steps: int = 0               # steps of the current run (since the last history entry)
    resumed: bool = False            # the current run continues a drag recorded in an earlier entry
    tracker: str = DEFAULT_METHOD    # the drag method of this drag (DragConfig.tracker when it began)
    tracker_state: dict[str, Any] = dataclasses.field(default_factory=dict)  # the point tracker's own state


@dataclass(frozen=True)
class DragSnapshot:
    """Everything a `DragSession` owns, as picklable CPU data (see the module docstring)."""

    config: Any                      # DragConfig (frozen)
    height: int
    width: int
    w0: np.ndarray                   # float32 [1, num_ws, w_dim] start latent (all layers)
    w: np.ndarray                    # float32 [1, n, w_dim] current optimised part
    handles: tuple[Point, ...] = ()
    targets: tuple[Point, ...] = ()
    mask: np.ndarray | None = None   # float32 [H, W] in [0, 1], 1 = fixed
    history: tuple[HistoryEntry, ...] = ()
    hist_idx: int = 0
    dirty: bool = False
    drag: DragProgress | None = None
    next_id: int = 1

    @property
    def entry(self) -> HistoryEntry:
        return self.history[self.hist_idx]

    @property
    def can_undo(self) -> bool:
        return self.hist_idx > 0 or self.dirty

    @property
    def can_redo(self) -> bool:
        return self.hist_idx + 1 < len(self.history) and not self.dirty

    @property
    def steps(self) -> int:
        """Steps taken in the current drag."""
        return 0 if self.drag is None else self.drag.steps

    def drags(self) -> list[DragSummary]:
        """The drags that lead to the entry shown, oldest first (what a recipe replays)."""
        return [e.drag for e in self.history[1:self.hist_idx + 1] if e.drag is not None]


def compose(w: torch.Tensor, w0: torch.Tensor, n_opt: int) -> torch.Tensor:
    """The full latent [1, num_ws, w_dim]: the optimised first `n_opt` layers (one shared code in W, broadcast)
    followed by the start latent's other layers."""
    return torch.cat([w.expand(1, n_opt, w0.shape[2]), w0[:, n_opt:]], dim=1)


def full_latent(snap: DragSnapshot) -> np.ndarray:
    """The snapshot's current latent [1, num_ws, w_dim] (what `DragSession.ws` returns)."""
    n_opt = min(int(snap.config.num_layers), snap.w0.shape[1])
    return compose(torch.from_numpy(snap.w), torch.from_numpy(snap.w0), n_opt).numpy().copy()


def as_points(points: Sequence[Sequence[float]], name: str) -> tuple[Point, ...]:
    out = []
    for p in points:
        if len(p) != 2:
            raise ValueError(f"{name}: every point must be (x, y), got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return tuple(out)


def start(config: Any, w0: np.ndarray, w_start: np.ndarray, height: int, width: int) -> DragSnapshot:
    """The state of a new session: the start latent, no points, one history entry."""
    w_start = np.array(w_start, dtype=np.float32)
    return DragSnapshot(config=config, height=int(height), width=int(width),
                        w0=np.array(w0, dtype=np.float32), w=w_start.copy(),
                        history=(HistoryEntry(0, w_start.copy(), (), ()),))


def commit(snap: DragSnapshot) -> DragSnapshot:
    """Record the current state as a new history entry if the latent moved since the last one."""
    if not snap.dirty:
        return snap
    drag = snap.drag
    summary = None
    if drag is not None:
        summary = DragSummary(handles=drag.start_handles, targets=snap.targets, steps=drag.run_steps, lr=drag.lr,
                              mask_lambda=float(snap.config.mask_lambda), mask=snap.mask, resume=drag.resumed,
                              tracker=drag.tracker)
        drag = dataclasses.replace(drag, run_steps=0, resumed=True, start_handles=snap.handles)
    entry = HistoryEntry(snap.next_id, snap.w.copy(), snap.handles, snap.targets, summary)
    return dataclasses.replace(snap, history=snap.history[:snap.hist_idx + 1] + (entry,),
                               hist_idx=snap.hist_idx + 1, dirty=False, drag=drag, next_id=snap.next_id + 1)


def set_points(snap: DragSnapshot, handles: Sequence[Sequence[float]],
               targets: Sequence[Sequence[float]]) -> DragSnapshot:
    """New handle and target points (x, y) in image pixels; ends any drag under way (it is recorded first)."""
    handles_ = as_points(handles, "handles")
    targets_ = as_points(targets, "targets")
    if len(handles_) != len(targets_):
        raise ValueError(f"{len(handles_)} handles but {len(targets_)} targets")
    for x, y in handles_ + targets_:
        if not (0 <= x <= snap.width - 1 and 0 <= y <= snap.height - 1):
            raise ValueError(f"point ({x}, {y}) is outside the {snap.width}×{snap.height} image")
    snap = commit(snap)
    return dataclasses.replace(snap, handles=handles_, targets=targets_, drag=None)


def set_mask(snap: DragSnapshot, mask: np.ndarray | None) -> DragSnapshot:
    """The region that must stay fixed ([H, W], 1 = fixed, clamped to [0, 1]); None clears it. A drag under
    way goes on. As in the official code the term applies only when the mask holds both 0 and 1."""
    if mask is None:
        return dataclasses.replace(snap, mask=None)
    m = np.clip(np.asarray(mask, dtype=np.float32), 0, 1)
    if m.shape != (snap.height, snap.width):
        raise ValueError(f"mask must be [{snap.height}, {snap.width}], got {tuple(m.shape)}")
    return dataclasses.replace(snap, mask=m)


def begin_drag(snap: DragSnapshot) -> DragSnapshot:
    """Start a drag from the current points. When the latent has not moved since the entry shown, that entry
    records the points the drag starts with (so Undo brings them back)."""
    if not snap.handles:
        raise RuntimeError("set_points() first: there is nothing to drag")
    history = snap.history
    if not snap.dirty:
        entry = dataclasses.replace(snap.entry, handles=snap.handles, targets=snap.targets)
        history = history[:snap.hist_idx] + (entry,) + history[snap.hist_idx + 1:]
    rc = np.array([[round(y), round(x)] for x, y in snap.handles], dtype=np.int64)
    drag = DragProgress(w_begin=snap.w.copy(), ref=None, points_rc=rc, steps=0, start_handles=snap.handles,
                        adam={}, lr=float(snap.config.lr), tracker=str(snap.config.tracker))
    return dataclasses.replace(snap, history=history, drag=drag)


def restore(snap: DragSnapshot, index: int) -> DragSnapshot:
    entry = snap.history[index]
    return dataclasses.replace(snap, hist_idx=index, w=entry.w.copy(), handles=entry.handles,
                               targets=entry.targets, drag=None, dirty=False)


def undo(snap: DragSnapshot) -> DragSnapshot | None:
    """The state before the last drag (latent and points), or None when there is none."""
    snap = commit(snap)
    return None if snap.hist_idx == 0 else restore(snap, snap.hist_idx - 1)


def redo(snap: DragSnapshot) -> DragSnapshot | None:
    """The drag undone last re-applied, or None when there is none."""
    return restore(snap, snap.hist_idx + 1) if snap.can_redo else None


def reset(snap: DragSnapshot) -> DragSnapshot:
    """Back to the start latent: points, history and the drag under way are cleared (the mask is kept)."""
    first = snap.history[0]
    return dataclasses.replace(snap, w=first.w.copy(), handles=(), targets=(), drag=None, dirty=False,
                               history=(first,), hist_idx=0)


def with_config(snap: DragSnapshot, **changes: Any) -> DragSnapshot:
    """The snapshot with drag settings changed (validated by the config); the shape-defining ones are fixed."""
    fixed = {"space", "feature_block", "num_layers", "noise_mode"} & set(changes)
    changed = [k for k in fixed if changes[k] != getattr(snap.config, k)]
    if changed:
        raise ValueError(f"{', '.join(sorted(changed))} cannot change within a session: start a new one")
    return dataclasses.replace(snap, config=dataclasses.replace(snap.config, **changes))
