"""What every button and click of the editor does, as plain functions of a `UIState` and plain values.

Nothing here imports Gradio: the page's one refusal path (`draggan/app/refusals.py`) turns a `UserError` into
a warning toast, and the event modules (`draggan/app/events/`) turn images into components. A `UserError` means the request was refused and nothing changed. Work that needs
the accelerator goes through `gpu.py` (picklable values in, new values out); the results replace the
session's `DragSnapshot` here, on the server.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from .. import export, limits, recipes
from ..limits import check_points, parse_points  # LimitError is a UserError: refusals read as they are
from ..errors import UserError
from ..engine import DragConfig
from ..engine.config import SPACES
from ..engine import methods
from ..engine import snapshot as snapshots
from ..recipes import DragRecord, Recipe
from . import gpu
from ..server import owned_files
from .drawing import FIXED_TINT, FLEXIBLE_TINT, display_scale, from_display, render_overlay, sample_mask, upscale_mask
from .gpu import DragUpdate, StopFlag
from ..server.memory import trim_memory
from .models import ModelRef
from .state import MAX_FRAMES_PER_DRAG, Job, Point, UIState
from ..server.tempdir import gradio_cache_dir, sessions_dir

LIMITS = limits.LIMITS


# ----------------------------------------------------------------------------------------------------------
# Settings and state creation.

def make_config(lr: Any = DragConfig.lr, max_steps: Any = DragConfig.max_steps,
                mask_lambda: Any = DragConfig.mask_lambda, space: str = DragConfig.space,
                tracker: str = DragConfig.tracker) -> DragConfig:
    """A validated drag configuration from the page's values."""
    if space not in SPACES:
        raise UserError(f"latent space must be one of {SPACES}, got {space!r}")
    if tracker not in methods.METHODS:
        raise UserError(f"the drag method must be one of {', '.join(methods.names())}, got {str(tracker)[:40]!r}")
    return DragConfig(space=space, lr=limits.check_number("lr", lr),
                      max_steps=limits.check_number("max_steps", max_steps),
                      mask_lambda=limits.check_number("mask_lambda", mask_lambda), tracker=tracker)


def session_dir() -> Path:
    """A new private folder for one session's files (stop flags, exports), removed by `release`."""
    return Path(tempfile.mkdtemp(prefix="s-", dir=sessions_dir()))


def make_state(model: ModelRef, device: str, seed: Any, psi: Any, space: str, config: DragConfig | None = None,
               render_every: Any = 0) -> UIState:
    """A fresh editor state: a new drag session at (seed, ψ, space) on the model, no points, no mask."""
    seed = limits.check_number("seed", seed)
    psi = limits.check_number("psi", psi)
    config = dataclasses.replace(config or DragConfig(), space=make_config(space=space).space)
    snap, image = gpu.new_image(model, device, seed, psi, config)
    return UIState(model=model, device=device, seed=seed, psi=psi, snap=snap, image=image, start_image=image,
                   render_every=limits.check_number("render_every", render_every), workdir=session_dir())


def ensure_idle(ui: UIState, action: str) -> None:
    if ui.running:
        raise UserError(f"A drag is running: press Stop before you {action}.")
    if ui.inverting:
        raise UserError(f"A photo is being inverted: wait for it to finish or press Cancel before you {action}.")


def update_params(ui: UIState, lr: Any, max_steps: Any, render_every: Any, mask_lambda: Any,
                  tracker: str | None = None) -> None:
    """Change the drag settings; they apply from the next Start (a new step size or tracker: a new drag)."""
    config = make_config(lr, max_steps, mask_lambda, ui.space, tracker or ui.snap.config.tracker)
    render_every = limits.check_number("render_every", render_every)
    with ui.lock:
        ui.snap = snapshots.with_config(ui.snap, lr=config.lr, max_steps=config.max_steps,
                                        mask_lambda=config.mask_lambda, tracker=config.tracker)
        ui.render_every = render_every


def replace(old: UIState | None, new: UIState) -> None:
    """`new` replaces `old` as its browser session's state (a new image, model, example or recipe): events
    that started on `old` go on with `new` (`UIState.latest`), and `old` is released."""
    if old is None:
        return
    with old.lock:
        old.replaced_by = new
    release(old)


def release(ui: UIState | None) -> None:
    """Free a closed or replaced session: stop its job, drop its frames and files (its folder, and the files of
    Gradio's cache that no other session was sent: a photo's images, exports and upload) and, for a photo
    session, its private tuned generator."""
    if ui is None:
        return
    job = ui.job
    if job is not None:
        job.stop.set()
        job.done.wait(timeout=30)
    ui.frames = {}
    if ui.model.private:
        from .models import forget_private_model
        forget_private_model(ui.model)
    if ui.workdir is not None:
        shutil.rmtree(ui.workdir, ignore_errors=True)
    owned_files.release(ui, gradio_cache_dir())    # served images, export copies and uploads only it was sent
    ui.photo = None
    trim_memory(collect=False)      # hand the freed frames' pages back to the system (memory.py)


# ----------------------------------------------------------------------------------------------------------
# Points.

def scale_of(ui: UIState) -> int:
    return display_scale(ui.height, ui.width)


def add_point(ui: UIState, display_xy: Sequence[float] | None) -> str:
    """Add a point from a click at display pixel (x, y): a handle, or the target of the last handle."""
    ensure_idle(ui, "add points")
    if display_xy is None or len(display_xy) != 2:
        raise UserError("Click inside the image to place a point.")
    s = scale_of(ui)
    x, y = from_display((float(display_xy[0]), float(display_xy[1])), s)
    if not (0 <= x <= ui.width - 1 and 0 <= y <= ui.height - 1):
        raise UserError(f"That point ({x:.0f}, {y:.0f}) is outside the {ui.width}×{ui.height} image.")
    with ui.lock:
        if ui.points_done:
            ui.snap = snapshots.set_points(ui.snap, (), ())
            ui.points_done = False
        if ui.pending is None:
            ui.pending = (x, y)
            return f"Handle {len(ui.handles)} placed; now click where it should go."
        snap = ui.snap
        ui.snap = snapshots.set_points(snap, snap.handles + (ui.pending,), snap.targets + ((x, y),))
        ui.pending = None
        return f"Target {len(ui.targets)} placed. Add more pairs or press Start."


def remove_last_point(ui: UIState) -> str:
    ensure_idle(ui, "remove points")
    with ui.lock:
        ui.points_done = False
        if ui.pending is not None:
            ui.pending = None
            return "Removed the last handle."
        snap = ui.snap
        if snap.targets:
            ui.snap = snapshots.set_points(snap, snap.handles[:-1], snap.targets[:-1])
            ui.pending = snap.handles[-1]
            return "Removed the last target."
    return "There are no points to remove."


def clear_points(ui: UIState) -> str:
    ensure_idle(ui, "clear points")
    with ui.lock:
        ui.pending = None
        ui.points_done = False
        ui.snap = snapshots.set_points(ui.snap, (), ())
    return "Points cleared."


# ----------------------------------------------------------------------------------------------------------
# Masks.

def _color_masks(layer: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(fixed, flexible) bool [height, width] masks from a painted RGBA layer (red = fixed, green = flexible)."""
    arr = np.asarray(layer)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UserError(f"the mask layer must be an RGBA image, got shape {arr.shape}")
    rgba = np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("RGBA")).astype(np.int32)
    painted = rgba[..., 3] >= 128
    red, green = rgba[..., 0], rgba[..., 1]
    return sample_mask(painted & (red > green), height, width), sample_mask(painted & (green >= red), height, width)


def masks_from_editor(value: Any, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Read an image-editor value (dict with 'layers') into (fixed, flexible) masks; None where empty."""
    if not value or not isinstance(value, dict):
        return None, None
    fixed = np.zeros((height, width), bool)
    flexible = np.zeros((height, width), bool)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        f, x = _color_masks(np.asarray(layer), height, width)
        fixed |= f
        flexible |= x
    return (fixed if fixed.any() else None), (flexible if flexible.any() else None)


def set_masks(ui: UIState, fixed: np.ndarray | None, flexible: np.ndarray | None) -> str:
    for m in (fixed, flexible):
        if m is not None and m.shape != (ui.height, ui.width):
            raise UserError(f"mask size {m.shape} differs from the image ({ui.height}, {ui.width})")
    with ui.lock:
        ui.fixed_mask = None if fixed is None or not fixed.any() else fixed.astype(bool)
        ui.flexible_mask = None if flexible is None or not flexible.any() else flexible.astype(bool)
    return mask_text(ui)


def mask_text(ui: UIState) -> str:
    parts = []
    if ui.flexible_mask is not None:
        parts.append(f"flexible area {ui.flexible_mask.mean():.0%} of the image")
    if ui.fixed_mask is not None:
        parts.append(f"fixed area {ui.fixed_mask.mean():.0%}")
    if parts:
        return "mask: " + ", ".join(parts)
    if methods.get(ui.snap.config.tracker).keep_lambda:
        return "no mask: the drag method keeps the image away from the drag still"
    return "no mask: the whole image may change"


def reset_mask(ui: UIState) -> str:
    return set_masks(ui, None, None)


def _listed(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def fixed_points_text(handles: Sequence[Point], targets: Sequence[Point], fixed: np.ndarray | None) -> str:
    """A sentence naming the handles and targets (x, y) that lie in the fixed area (`fixed`, True = held still:
    outside the painted flexible area, or painted fixed), or "" when none does or there is no mask.

    The mask term holds the features there at their start, so a handle there cannot leave and no handle can
    reach a target there: the drag cannot get there, however many steps it takes."""
    if fixed is None:
        return ""
    height, width = fixed.shape

    def held(point: Point) -> bool:
        x, y = point
        return bool(fixed[min(max(round(y), 0), height - 1), min(max(round(x), 0), width - 1)])

    named = [f"handle {i + 1}" for i, p in enumerate(handles) if held(p)]
    named += [f"target {i + 1}" for i, p in enumerate(targets) if held(p)]
    if not named:
        return ""
    verb = "lies" if len(named) == 1 else "lie"
    return (f"{_listed(named).capitalize()} {verb} outside the flexible area, which the mask holds still: the drag "
            f"cannot get there. Paint the flexible area over {'it' if len(named) == 1 else 'them'} "
            f"or reset the mask.")


def short_of_target_text(steps: int, distances: Sequence[float], masked: bool) -> str:
    """The status of a drag that reached its step limit before every handle arrived: how far it is short and
    what would help — more steps (Start continues), a larger flexible area when a mask is painted (the fixed
    area's term may be what holds it back), a larger step size."""
    short = max(distances) if distances else 0.0
    helps = ["more steps (press Start to continue with the same points, or raise Max steps per drag)"]
    if masked:
        helps.append("a larger flexible area")
    helps.append("a larger step size (lr)")
    return f"Step limit reached after {steps} steps, {short:.1f} px short of the target. What would help: " \
        f"{_listed(helps)}."


def effective_fixed_mask(ui: UIState) -> np.ndarray | None:
    """The engine's mask (True = keep fixed): outside a painted flexible area, plus any painted fixed area."""
    fixed = None
    if ui.flexible_mask is not None:
        fixed = ~ui.flexible_mask
    if ui.fixed_mask is not None:
        fixed = ui.fixed_mask.copy() if fixed is None else fixed | ui.fixed_mask
    if fixed is None or fixed.all() or not fixed.any():
        return None
    return fixed


def mask_layer(ui: UIState) -> np.ndarray:
    """The masks painted as an RGBA layer at display size, in the brush colours (for the image editor), with
    smooth edges; `masks_from_editor` reads it back exactly."""
    s = scale_of(ui)
    size = (ui.width * s, ui.height * s)
    layer = np.zeros((size[1], size[0], 4), np.uint8)
    if ui.flexible_mask is not None:
        layer[np.asarray(upscale_mask(ui.flexible_mask, size)) > 0] = (*FLEXIBLE_TINT, 255)
    if ui.fixed_mask is not None:
        layer[np.asarray(upscale_mask(ui.fixed_mask, size)) > 0] = (*FIXED_TINT, 255)
    return layer


# ----------------------------------------------------------------------------------------------------------
# Showing the state.

def view(ui: UIState) -> Image.Image:
    """The display image: the current result with masks, arrows and numbered points."""
    with ui.lock:
        return render_overlay(ui.image, ui.handles, ui.targets, ui.fixed_mask, ui.flexible_mask,
                              show_mask=ui.show_mask, scale=scale_of(ui), done=ui.points_done)


def plain_view(ui: UIState, image: np.ndarray | None = None) -> np.ndarray:
    """The current result (or `image`) upscaled to display size, without overlays (the mask editor's
    background, the before / after view)."""
    s = scale_of(ui)
    image = ui.image if image is None else image
    return np.asarray(Image.fromarray(image).resize((ui.width * s, ui.height * s),
                                                    Image.LANCZOS if s > 1 else Image.NEAREST))


def _distances(handles: Sequence[Point], targets: Sequence[Point]) -> str:
    return ", ".join(f"{i + 1}: {np.hypot(tx - x, ty - y):.1f}px"
                     for i, ((x, y), (tx, ty)) in enumerate(zip(handles, targets)))


def stats_text(ui: UIState) -> str:
    """One Markdown line: model, points, and the state of the last or running drag."""
    job = ui.job
    if ui.photo is not None:
        head = (f"**{ui.model.label}** · photo *{ui.photo.name}* (inverted, PSNR {ui.photo.psnr:.1f} dB, "
                f"own tuned generator) · {ui.space.upper()}")
    else:
        head = f"**{ui.model.label}** · seed {ui.seed} · ψ {ui.psi:g} · {ui.space.upper()}"
    lines = [head]
    last = job.last if job is not None else None
    drags = ui.snap.drags()
    if ui.inverting:
        lines.append("inverting the photo · " + (f"step {last.step}/{last.total_steps}" if last is not None
                                                  else "preparing") + " · press Cancel to keep this image")
    elif ui.running and isinstance(last, DragUpdate):
        ms = 1000.0 * (time.perf_counter() - job.started) / max(job.steps, 1)
        view = " · live preview (exact image at the end)" if job.view_kind == "preview" else ""
        lines.append(f"running · step {job.steps} of {job.limit} · {ms:.0f} ms/step · distance "
                     f"{_distances(last.handles, last.targets)}{view}")
    elif ui.points_done:
        lines.append(f"{len(drags)} drag(s) done · its points are done (grey)")
    elif drags:
        lines.append(f"{len(drags)} drag(s) done · last {drags[-1].steps} steps · distance "
                     f"{_distances(ui.handles, ui.targets) or '–'}")
    else:
        pairs = len(ui.targets)
        lines.append(f"{pairs} point pair(s) · click the image: handle (red) then target (blue)")
    if not ui.running and not ui.inverting and (cost := drag_cost_text(ui)):
        lines[-1] += f" · {cost}"
    lines.append(mask_text(ui))
    if not ui.running and not ui.points_done:
        blocked = fixed_points_text(ui.handles, ui.targets, effective_fixed_mask(ui))
        if blocked:
            lines.append(blocked)
    if ui.notice and not ui.running:
        lines.append(ui.notice)
    return "  \n".join(lines)


COST_STEPS = 100   # the drag whose cost the status line states


def drag_cost_text(ui: UIState, steps: int = COST_STEPS) -> str:
    """What a `steps`-step drag of this session's model costs on this hardware, from the costs measured in
    this process (`drag_cost.drag_seconds`; a photo's tuned copy costs what its base model does), e.g.
    "a 100-step drag ≈ 20 s on this CPU"; empty while nothing was measured (a ZeroGPU server, whose steps
    run in workers)."""
    from ..engine import drag_cost
    from .models import shared_cache

    refs = [ui.model] + ([ui.photo.base] if ui.photo is not None else [])
    for ref in refs:
        G = shared_cache().loaded(ref.source, ui.device)
        seconds = None if G is None else drag_cost.drag_seconds(G.synthesis, steps)
        if seconds is not None:
            where = {"cuda": "GPU", "mps": "GPU (MPS)"}.get(str(ui.device).split(":")[0], "CPU")
            return f"a {steps}-step drag ≈ {_seconds(seconds)} on this {where}"
    return ""


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 9.5 else f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def progress_html(ui: UIState) -> str:
    """A drag progress bar: steps taken of this run's step limit, as the status line counts them (a resumed
    drag counts from its Start), and the largest distance left (HTML)."""
    job = ui.job
    last = job.last if job is not None else None
    if not ui.running or not isinstance(last, DragUpdate) or not job.limit:
        return ""
    left = max(last.distances) if last.distances else 0.0
    return (f"<div class='drag-progress'><progress value='{job.steps}' max='{job.limit}'></progress>"
            f"<span>step {job.steps} of {job.limit} · {left:.1f} px to go</span></div>")


END_NOTICES = {
    "arrived": "Arrived: every handle reached its target in {steps} steps. Click the image to place new points.",
    "stopped": "Stopped after {steps} steps; press Start to continue with the same points.",
}


# ----------------------------------------------------------------------------------------------------------
# Dragging.

def start_drag(ui: UIState) -> Job:
    """Validate the points and mark a drag (or the resumption of the stopped one) as this session's job."""
    ensure_idle(ui, "start another drag")
    with ui.lock:
        if ui.points_done and ui.pending is None:
            raise UserError("Those points have arrived: click the image to place a new handle and target, "
                            "then press Start.")
        check_points(ui.handles, ui.targets, ui.height, ui.width)
        snap = snapshots.set_mask(ui.snap, effective_fixed_mask(ui))
        if snap.drag is not None and (snap.drag.lr, snap.drag.tracker) != (snap.config.lr, snap.config.tracker):
            snap = snapshots.set_points(snap, snap.handles, snap.targets)   # new step size or tracker: a new drag
        ui.snap = snap
        job = Job(kind="drag", stop=StopFlag(str(ui.workdir / "stop")))
        job.stop.clear()
        job.goal = snap.steps + snap.config.max_steps
        job.limit = snap.config.max_steps
        ui.job = job
    return job


def follow(ui: UIState, job: Job, budget_s: float | None = None) -> Iterator[DragUpdate]:
    """Run the job's drag in chunks of `budget_s` seconds (ZeroGPU grants; one chunk elsewhere) and yield
    every update after applying it to `ui`. Raises `UserError` when the drag failed; the session keeps the
    last snapshot that came back either way."""
    chunk = budget = budget_s if budget_s is not None else gpu.chunk_seconds()
    frames: list[np.ndarray] = []
    first_entry, first_steps = ui.snap.entry.id, ui.snap.steps
    try:
        while True:
            final = None
            chunk_start = ui.snap.steps
            try:
                policy = ui.policy if ui.render_every == 0 else None
                for update in gpu.drag(ui.model, ui.device, ui.snap, job.goal, job.stop, budget, ui.render_every,
                                       policy):
                    with ui.lock:
                        job.last = update
                        job.steps = update.step - first_steps
                        if update.image is not None:
                            ui.image = update.image
                            job.view_kind = update.image_kind
                            frames.append(update.image)
                            if len(frames) > 2 * MAX_FRAMES_PER_DRAG:   # bounded while the drag runs, too
                                frames[:] = frames[::2]
                        if update.snapshot is not None:
                            ui.snap = update.snapshot
                            final = update
                    yield update
            except gpu.failures() as exc:    # a model gone, the worker's or the platform's refusal; a bug goes on
                raise UserError(gpu.explain_failure(exc)) from None
            if final is None or final.end != "budget":
                break
            budget = next_chunk_seconds(chunk, final.step - chunk_start, final.seconds, job.goal - final.step)
        with ui.lock:
            if ui.snap.entry.id != first_entry:
                ui.keep_frames(ui.snap.entry.id, frames)
            if final is not None and final.end in (*END_NOTICES, "limit"):
                ui.points_done = final.end == "arrived"
                steps = ui.snap.drags()[-1].steps if ui.snap.drags() else final.step
                ui.notice = (short_of_target_text(steps, final.distances, effective_fixed_mask(ui) is not None)
                             if final.end == "limit" else END_NOTICES[final.end].format(steps=steps))
    finally:
        with ui.lock:
            job.done.set()
            ui.job = None


def next_chunk_seconds(chunk_s: float, steps: int, seconds: float, remaining: int) -> float:
    """The budget of a drag's next call: a full `chunk_s`, or less when the `remaining` steps, at the last
    chunk's pace (`steps` in `seconds`) with a quarter to spare, need less: the GPU time the call asks for
    (`gpu.drag_seconds`) follows, so a drag's last call spends less of a ZeroGPU visitor's quota."""
    if steps <= 0:
        return chunk_s
    return min(chunk_s, remaining * seconds / steps * 1.25 + 1.0)


def stop_drag(ui: UIState, timeout: float = 60.0) -> str:
    """Stop a running drag after its current step and wait until its result is recorded."""
    job = ui.job
    if job is None or job.kind != "drag":
        return "Nothing is running."
    job.stop.set()
    job.done.wait(timeout)
    return f"Stopped after {job.steps} steps; press Start to continue."


def run_blocking(ui: UIState) -> Job:
    """Start a drag and wait for it to finish (headless use and tests)."""
    job = start_drag(ui)
    for _ in follow(ui, job):
        pass
    return job


def _show_entry(ui: UIState) -> None:
    image = ui.entry_image()
    ui.image = image if image is not None else gpu.render(ui.model, ui.device, ui.snap)


def _move_in_history(ui: UIState, action: str, move) -> bool:
    """Apply the history move `move` (snapshot → snapshot or None) and show its entry; False if there is none."""
    ensure_idle(ui, action)
    with ui.lock:
        snap = move(ui.snap)
        if snap is None:
            return False
        ui.snap, ui.pending, ui.points_done = snap, None, False
        _show_entry(ui)
    return True


def undo(ui: UIState) -> str:
    moved = _move_in_history(ui, "undo", lambda snap: snapshots.undo(snap) if snap.drags() else None)
    return "Undid the last drag." if moved else "Nothing to undo."


def redo(ui: UIState) -> str:
    return "Redid the drag." if _move_in_history(ui, "redo", snapshots.redo) else "Nothing to redo."


def reset_image(ui: UIState) -> str:
    """Back to the start image: drags, history and points are cleared (the mask is kept)."""
    ensure_idle(ui, "reset the image")
    with ui.lock:
        ui.snap = snapshots.reset(ui.snap)
        ui.pending, ui.points_done = None, False
        ui.frames = {}
        ui.image = ui.start_image
    return "Back to the start image."


def headless_drag(model: ModelRef, device: str, seed: Any, psi: Any, space: str, points: Any, steps: Any,
                  lr: Any = DragConfig.lr, mask_lambda: Any = DragConfig.mask_lambda) -> tuple[UIState, Job]:
    """One complete drag without a browser: a new state, the given points, `steps` steps at most."""
    config = make_config(lr, steps, mask_lambda, space)
    handles, targets = parse_points(points)
    ui = make_state(model, device, seed, psi, space, config,
                    render_every=min(int(config.max_steps), int(limits.LIMITS.render_every.hi)))
    check_points(handles, targets, ui.height, ui.width)
    ui.snap = snapshots.set_points(ui.snap, handles, targets)
    return ui, run_blocking(ui)


# ----------------------------------------------------------------------------------------------------------
# Export and recipes.

def file_stem(ui: UIState) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(ui.base_model.source).stem)[:40]
    if ui.photo is not None:
        photo = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(ui.photo.name).stem)[:40]
        return f"draggan-{name}-photo-{photo}"
    return f"draggan-{name}-seed{ui.seed}"


def _out_dir(ui: UIState, out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    folder = ui.workdir / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def export_png(ui: UIState, out_dir: str | Path | None = None, mark: bool | None = None,
               displayed: bool = False) -> Path:
    """The image shown as PNG that says what it is: model, seed (none for a photo), every drag's points (the
    drags that lead to this image) and AI-generated / AI-edited; `mark` stamps the visible "AI Generated"
    label (None: on for an edited photo, off otherwise). At the generator's size, or `displayed`: at the
    size the page shows it (`plain_view`: a small model's image enlarged, which the PNG says)."""
    drags = ui.snap.drags()
    points = [(h, t) for d in drags for h, t in zip(d.handles, d.targets)]
    base = ui.base_model
    model = base.source if recipes.is_zoo_key(base.source) else base.label      # a zoo key, never a path
    upscaled = displayed and scale_of(ui) > 1
    image = plain_view(ui) if upscaled else ui.image
    name = f"{file_stem(ui)}-{image.shape[1]}px.png" if upscaled else f"{file_stem(ui)}.png"
    return export.save_png(image, _out_dir(ui, out_dir) / name, model=model,
                           seed=None if ui.photo is not None else ui.seed, points=points,
                           edited_photo=ui.photo is not None, mark=mark,
                           upscaled_from=(ui.width, ui.height) if upscaled else None)


def export_latent(ui: UIState, out_dir: str | Path | None = None) -> Path:
    return export.save_latent(snapshots.full_latent(ui.snap), _out_dir(ui, out_dir) / f"{file_stem(ui)}-ws.npy")


def export_animation(ui: UIState, fmt: str = "gif", out_dir: str | Path | None = None, fps: float = 12.0) -> Path:
    """The start image followed by the frames of every drag that leads to the image shown."""
    ids = ui.drags_shown()
    if not ids:
        raise UserError("Run a drag first: the animation shows the frames of your drags.")
    fmt = fmt.lower().lstrip(".")
    if fmt not in export.animation_formats():
        raise UserError(f"{fmt.upper()} export is not available here; this installation writes "
                        f"{', '.join(export.animation_formats()).upper()}.")
    frames = [ui.start_image] + [f for i in ids for f in ui.frames.get(i, [])]
    return export.save_animation(frames, _out_dir(ui, out_dir) / f"{file_stem(ui)}.{fmt}", fps=fps)


def recipe_of(ui: UIState) -> Recipe:
    """The session's edit as a recipe: its zoo key, or "current" with the model's content key (no path)."""
    try:
        model, sha = recipes.model_ref(ui.model.source)
    except recipes.RecipeError as exc:
        raise UserError(str(exc)) from None
    drags = [DragRecord(handles=list(d.handles), targets=list(d.targets), steps=d.steps, lr=d.lr,
                        mask_lambda=d.mask_lambda, mask=None if d.mask is None else d.mask > 0.5, resume=d.resume,
                        tracker=d.tracker)
             for d in ui.snap.drags()]
    return Recipe(model=model, model_sha256=sha, model_label=ui.model.label, seed=ui.seed, psi=ui.psi,
                  space=ui.space, image_size=(ui.height, ui.width), drags=drags)


def export_recipe(ui: UIState, out_dir: str | Path | None = None) -> Path:
    if ui.photo is not None:
        raise UserError("Recipes replay an edit from a seed, and this image started from your photo. Export the "
                        "latent (.npy) and the tuned generator instead: together they reproduce the edited image.")
    if not ui.snap.drags():
        raise UserError("Run a drag first: the recipe records your drags.")
    return recipes.save_recipe(recipe_of(ui), _out_dir(ui, out_dir) / f"{file_stem(ui)}-recipe.json")


def state_from_recipe(recipe: Recipe, model: ModelRef, device: str, render_every: int = 2,
                      stop: StopFlag | None = None) -> UIState:
    """Replay a recipe into a new editor state on `model` whose history holds the replayed drags (undo works).
    The recipe's model (zoo key or content key) is checked against `model` first."""
    try:
        key = recipes.model_key(model.source)
        recipes.check_model_key(recipe, key)     # here: an error raised in a ZeroGPU worker loses its text
        snap, start_image, results = gpu.replay(model, device, recipe, render_every, key, stop)
    except recipes.RecipeError as exc:
        raise UserError(str(exc)[:1].upper() + str(exc)[1:]) from None
    ui = UIState(model=model, device=device, seed=recipe.seed, psi=recipe.psi, snap=snap, image=start_image,
                 start_image=start_image, render_every=render_every, workdir=session_dir())
    for entry_id, frames in results:
        ui.keep_frames(entry_id, frames)
    _show_entry(ui)
    return ui
