"""What every button and click of the editor does, as plain functions of a `UIState` and plain values.

Nothing here imports Gradio: the app (`app.py`, `draggan/ui/callbacks.py`) turns `UserError` into a warning
toast and images into components. A `UserError` means the request was refused and nothing changed.
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from .. import export, limits, recipes
from ..export import DragRecord, Recipe
from .drawing import FIXED_TINT, FLEXIBLE_TINT, display_scale, from_display, render_overlay
from .state import DragJob, DragParams, Point, UIState

SPACES = ("w", "w+")
LIMITS = limits.LIMITS


class UserError(Exception):
    """A request the editor refuses; the message tells the user what to do instead."""


# ----------------------------------------------------------------------------------------------------------
# Settings and state creation.

def _number(name: str, value: Any, integer: bool = False) -> float | int:
    """`value` checked against the limits table (`draggan.limits`); `integer` is the table's to decide."""
    try:
        return limits.check_number(name, value)
    except limits.LimitError as exc:
        raise UserError(str(exc)) from None


def make_params(lr: Any, max_steps: Any, render_every: Any, mask_lambda: Any) -> DragParams:
    """Validated drag settings."""
    return DragParams(lr=_number("lr", lr), max_steps=_number("max_steps", max_steps, integer=True),
                      render_every=_number("render_every", render_every, integer=True),
                      mask_lambda=_number("mask_lambda", mask_lambda))


def make_state(G: Any, source: str, label: str, seed: Any, psi: Any, space: str,
               params: DragParams | None = None) -> UIState:
    """A fresh editor state: a new drag session at (seed, ψ, space) on generator G, no points, no mask."""
    from ..engine import DragConfig, DragSession

    seed = _number("seed", seed, integer=True)
    psi = _number("psi", psi)
    if space not in SPACES:
        raise UserError(f"latent space must be one of {SPACES}, got {space!r}")
    params = params or DragParams()
    session = DragSession(G, seed=seed, psi=psi,
                          config=DragConfig(space=space, lr=params.lr, mask_lambda=params.mask_lambda))
    image = session.render()
    return UIState(model_source=source, model_label=label, G=G, seed=seed, psi=psi, space=space,
                   session=session, image=image, start_image=image, params=params)


def ensure_idle(ui: UIState, action: str) -> None:
    if ui.running:
        raise UserError(f"A drag is running: press Stop before you {action}.")
    if ui.inverting:
        raise UserError(f"A photo is being inverted: wait for it to finish or press Cancel before you {action}.")


def update_params(ui: UIState, lr: Any, max_steps: Any, render_every: Any, mask_lambda: Any) -> None:
    """Change the drag settings; they apply from the next Start."""
    ui.params = make_params(lr, max_steps, render_every, mask_lambda)


def release(ui: UIState | None) -> None:
    """Free a closed or replaced session: stop its drag or photo inversion and drop the session, frames,
    history and, for a photo session, its private tuned generator."""
    if ui is None:
        return
    inversion = ui.inversion
    if inversion is not None:
        inversion.cancel()
        inversion.done.wait(timeout=30)
    job = ui.job
    if job is not None:
        job.stop()
        job.done.wait(timeout=30)
    ui.history.clear()
    ui.redo_stack.clear()
    ui.session = None
    ui.G = None
    ui.photo = None


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
        if len(ui.handles) == len(ui.targets):
            ui.handles.append((x, y))
            return f"Handle {len(ui.handles)} placed; now click where it should go."
        ui.targets.append((x, y))
        return f"Target {len(ui.targets)} placed. Add more pairs or press Start."


def remove_last_point(ui: UIState) -> str:
    ensure_idle(ui, "remove points")
    with ui.lock:
        if len(ui.handles) > len(ui.targets):
            ui.handles.pop()
            return "Removed the last handle."
        if ui.targets:
            ui.targets.pop()
            return "Removed the last target."
    return "There are no points to remove."


def clear_points(ui: UIState) -> str:
    ensure_idle(ui, "clear points")
    with ui.lock:
        ui.handles.clear()
        ui.targets.clear()
    return "Points cleared."


def parse_points(points: Any) -> tuple[list[Point], list[Point]]:
    """Handles and targets from `[[hx, hy, tx, ty], ...]`, `[[[hx, hy], [tx, ty]], ...]` or that as JSON text."""
    try:
        return limits.parse_points(points)
    except limits.LimitError as exc:
        raise UserError(str(exc)) from None


def check_points(handles: Sequence[Point], targets: Sequence[Point], height: int, width: int) -> None:
    """Refuse a drag whose points are missing, unpaired, too many or outside the image."""
    try:
        limits.check_points(handles, targets, height, width)
    except limits.LimitError as exc:
        raise UserError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------------
# Masks.

def _color_masks(layer: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(fixed, flexible) bool [height, width] masks from a painted RGBA layer (red = fixed, green = flexible)."""
    arr = np.asarray(layer)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise UserError(f"the mask layer must be an RGBA image, got shape {arr.shape}")
    img = Image.fromarray(arr.astype(np.uint8)).convert("RGBA").resize((width, height), Image.BILINEAR)
    rgba = np.asarray(img).astype(np.int32)
    painted = rgba[..., 3] >= 96
    red, green = rgba[..., 0], rgba[..., 1]
    return painted & (red > green), painted & (green >= red)


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
    return "mask: " + ", ".join(parts) if parts else "no mask: the whole image may change"


def reset_mask(ui: UIState) -> str:
    return set_masks(ui, None, None)


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
    """The masks painted as an RGBA layer at display size, in the brush colours (for the image editor)."""
    s = scale_of(ui)
    layer = np.zeros((ui.height, ui.width, 4), np.uint8)
    if ui.flexible_mask is not None:
        layer[ui.flexible_mask] = (*FLEXIBLE_TINT, 255)
    if ui.fixed_mask is not None:
        layer[ui.fixed_mask] = (*FIXED_TINT, 255)
    return np.asarray(Image.fromarray(layer).resize((ui.width * s, ui.height * s), Image.NEAREST))


# ----------------------------------------------------------------------------------------------------------
# Showing the state.

def view(ui: UIState) -> Image.Image:
    """The display image: the current result with masks, arrows and numbered points."""
    with ui.lock:
        return render_overlay(ui.image, list(ui.handles), list(ui.targets), ui.fixed_mask, ui.flexible_mask,
                              show_mask=ui.show_mask, scale=scale_of(ui))


def plain_view(ui: UIState) -> np.ndarray:
    """The current result upscaled to display size, without overlays (the mask editor's background)."""
    s = scale_of(ui)
    return np.asarray(Image.fromarray(ui.image).resize((ui.width * s, ui.height * s),
                                                       Image.LANCZOS if s > 1 else Image.NEAREST))


def stats_text(ui: UIState) -> str:
    """One Markdown line: model, points, and the state of the last or running drag."""
    job = ui.job
    pairs = min(len(ui.handles), len(ui.targets))
    if ui.photo is not None:
        head = (f"**{ui.model_label}** · photo *{ui.photo.name}* (inverted, PSNR {ui.photo.psnr:.1f} dB, "
                f"own tuned generator) · {ui.space.upper()}")
    else:
        head = f"**{ui.model_label}** · seed {ui.seed} · ψ {ui.psi:g} · {ui.space.upper()}"
    lines = [head]
    last = job.last if job is not None else None
    inversion = ui.inversion
    if inversion is not None and inversion.running:
        event = inversion.last
        lines.append("inverting the photo · " + (f"step {event.step}/{event.total_steps}" if event is not None
                                                  else "preparing") + " · press Cancel to keep this image")
    elif job is not None and last is not None:
        ms = 1000.0 * (time.perf_counter() - job.started) / max(job.count, 1)
        dist = ", ".join(f"{i + 1}: {d:.1f}px" for i, d in enumerate(last.distances))
        lines.append(f"running · step {last.step} · {ms:.0f} ms/step · distance {dist}")
    elif ui.history:
        rec = ui.history[-1].record
        dist = ", ".join(f"{i + 1}: {np.hypot(tx - x, ty - y):.1f}px"
                         for i, ((x, y), (tx, ty)) in enumerate(zip(ui.handles, ui.targets)))
        lines.append(f"{len(ui.history)} drag(s) done · last {rec.steps} steps · distance {dist or '–'}")
    else:
        lines.append(f"{pairs} point pair(s) · click the image: handle (red) then target (blue)")
    lines.append(mask_text(ui))
    return "  \n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Dragging.

def start_drag(ui: UIState) -> DragJob:
    """Validate the points and start a background drag (or resume the stopped one)."""
    ensure_idle(ui, "start another drag")
    session = ui.session
    if session is None:
        raise UserError("No model is loaded yet.")
    with ui.lock:
        handles, targets = list(ui.handles), list(ui.targets)
    check_points(handles, targets, ui.height, ui.width)
    params = ui.params
    resume = (session.steps > 0 and handles == session.handles and targets == session.targets
              and params.lr == session.config.lr)
    record = DragRecord(handles=handles, targets=targets, steps=params.max_steps, lr=params.lr,
                        mask_lambda=params.mask_lambda, mask=effective_fixed_mask(ui), resume=resume,
                        tracker=getattr(session.config, "tracker", recipes.DEFAULT_TRACKER))
    job = DragJob(ui, record, render_every=params.render_every)
    with ui.lock:
        ui.job = job
    return job.start()


def follow(ui: UIState, job: DragJob, min_interval: float = 0.05) -> Iterator[tuple[Image.Image, str]]:
    """Yield (display image, stats) whenever the job renders a frame (at most every `min_interval` s),
    then once more when it ends. Raises `UserError` if the drag failed."""
    last_emit = 0.0
    pending = False
    while True:
        try:
            r = job.results.get(timeout=0.25)
        except queue.Empty:
            r = False
        if r is None:
            break
        if r is not False:
            pending = pending or r.image is not None
        if pending and time.perf_counter() - last_emit >= min_interval:
            last_emit = time.perf_counter()
            pending = False
            yield view(ui), stats_text(ui)
    job.done.wait()
    if job.error is not None:
        raise UserError(f"The drag failed: {type(job.error).__name__}: {job.error}")
    yield view(ui), stats_text(ui)


def stop_drag(ui: UIState, timeout: float = 60.0) -> str:
    """Stop a running drag after its current step and wait until its result is recorded."""
    job = ui.job
    if job is None:
        return "Nothing is running."
    job.stop()
    job.done.wait(timeout)
    return f"Stopped after {job.steps} steps; press Start to continue."


def run_blocking(ui: UIState) -> DragJob:
    """Start a drag and wait for it to finish (headless use and tests)."""
    job = start_drag(ui)
    job.done.wait()
    if job.error is not None:
        raise UserError(f"The drag failed: {type(job.error).__name__}: {job.error}")
    return job


def _sync_points(ui: UIState) -> None:
    with ui.lock:
        ui.handles = [tuple(p) for p in ui.session.handles]
        ui.targets = [tuple(p) for p in ui.session.targets]
        ui.image = ui.session.render()


def undo(ui: UIState) -> str:
    ensure_idle(ui, "undo")
    if not ui.history or not ui.session.undo():
        return "Nothing to undo."
    ui.redo_stack.append(ui.history.pop())
    _sync_points(ui)
    return "Undid the last drag."


def redo(ui: UIState) -> str:
    ensure_idle(ui, "redo")
    if not ui.redo_stack or not ui.session.redo():
        return "Nothing to redo."
    ui.history.append(ui.redo_stack.pop())
    _sync_points(ui)
    return "Redid the drag."


def reset_image(ui: UIState) -> str:
    """Back to the start image: drags, history and points are cleared (the mask is kept)."""
    ensure_idle(ui, "reset the image")
    ui.session.reset()
    with ui.lock:
        ui.history.clear()
        ui.redo_stack.clear()
        ui.handles.clear()
        ui.targets.clear()
        ui.image = ui.start_image
    return "Back to the start image."


def headless_drag(G: Any, source: str, label: str, seed: Any, psi: Any, space: str, points: Any, steps: Any,
                  lr: Any = 1e-3, mask_lambda: Any = 20.0) -> tuple[UIState, DragJob]:
    """One complete drag without a browser: a new state, the given points, `steps` steps at most."""
    params = make_params(lr, steps, 1, mask_lambda)
    params.render_every = min(params.max_steps, int(LIMITS.render_every.hi))
    handles, targets = parse_points(points)
    ui = make_state(G, source, label, seed, psi, space, params)
    check_points(handles, targets, ui.height, ui.width)
    ui.handles, ui.targets = handles, targets
    job = run_blocking(ui)
    return ui, job


# ----------------------------------------------------------------------------------------------------------
# Export and recipes.

def _out_dir(out_dir: str | os.PathLike | None) -> Path:
    return Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="draggan-"))


def file_stem(ui: UIState) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(ui.model_source).stem)[:40]
    if ui.photo is not None:
        photo = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(ui.photo.name).stem)[:40]
        return f"draggan-{name}-photo-{photo}"
    return f"draggan-{name}-seed{ui.seed}"


def export_png(ui: UIState, out_dir: str | os.PathLike | None = None) -> Path:
    return export.save_png(ui.image, _out_dir(out_dir) / f"{file_stem(ui)}.png")


def export_latent(ui: UIState, out_dir: str | os.PathLike | None = None) -> Path:
    return export.save_latent(ui.session.ws, _out_dir(out_dir) / f"{file_stem(ui)}-ws.npy")


def export_animation(ui: UIState, fmt: str = "gif", out_dir: str | os.PathLike | None = None,
                     fps: float = 12.0) -> Path:
    """The start image followed by the frames of every drag kept in the history."""
    if not ui.history:
        raise UserError("Run a drag first: the animation shows the frames of your drags.")
    fmt = fmt.lower().lstrip(".")
    if fmt not in export.animation_formats():
        raise UserError(f"{fmt.upper()} export is not available here; this installation writes "
                        f"{', '.join(export.animation_formats()).upper()} (MP4 needs: pip install imageio-ffmpeg).")
    frames = [ui.start_image] + [f for d in ui.history for f in d.frames]
    return export.save_animation(frames, _out_dir(out_dir) / f"{file_stem(ui)}.{fmt}", fps=fps)


def recipe_of(ui: UIState) -> Recipe:
    """The session's edit as a recipe: its zoo key, or "current" with the model's content key (no path)."""
    try:
        model, sha = recipes.model_ref(ui.model_source)
    except recipes.RecipeError as exc:
        raise UserError(str(exc)) from None
    return Recipe(model=model, model_sha256=sha, model_label=ui.model_label, seed=ui.seed, psi=ui.psi,
                  space=ui.space, image_size=(ui.height, ui.width), drags=[d.record for d in ui.history])


def export_recipe(ui: UIState, out_dir: str | os.PathLike | None = None) -> Path:
    if ui.photo is not None:
        raise UserError("Recipes replay an edit from a seed, and this image started from your photo. Export the "
                        "latent (.npy) and the tuned generator instead: together they reproduce the edited image.")
    if not ui.history:
        raise UserError("Run a drag first: the recipe records your drags.")
    return export.save_recipe(recipe_of(ui), _out_dir(out_dir) / f"{file_stem(ui)}-recipe.json")


def state_from_recipe(recipe: Recipe, G: Any, params: DragParams | None = None, *, source: str | None = None,
                      stop_event: Any = None, on_step: Any = None) -> UIState:
    """Replay a recipe (`recipes.replay`) into a new editor state whose history holds the replayed drags.

    `source` is the model source `G` was loaded from: the new state's model, and what the recipe's model is
    checked against (zoo key or content key). Without it the recipe's own zoo key (or "current") names the
    state's model and the check is skipped.
    """
    from .state import FinishedDrag

    key = None if source is None else recipes.model_key(source)
    ui = make_state(G, source or recipe.model, recipe.model_label or recipe.model, recipe.seed, recipe.psi,
                    recipe.space, params)
    try:
        result = recipes.replay(recipe, G, current_model_key=key, render_every=max(1, ui.params.render_every),
                                stop_event=stop_event, on_step=on_step)
    except recipes.RecipeError as exc:
        raise UserError(str(exc)[:1].upper() + str(exc)[1:]) from None
    ui.session = result.session
    ui.history.extend(FinishedDrag(record=d.record, frames=d.frames) for d in result.drags if d.moved)
    _sync_points(ui)
    return ui
