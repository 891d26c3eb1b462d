"""Edit your own photo: what the "Upload photo" panel does, as plain functions of a `UIState` (no Gradio).

Flow: `prepare_photo` checks the upload and shows the crop the model will be fitted to; `start_inversion` runs
`draggan.inversion.invert` in a background `InversionJob` (projection into W, then W+, then pivotal tuning of a
private copy of the generator); `follow_inversion` streams progress and previews; when the job succeeds it
installs the result itself (`adopt_inversion`): the session then drags the inverted latent on its own tuned
generator. That generator is never put in the shared `GeneratorCache`; it lives and dies with the `UIState`
(dropped by `handlers.release` when the browser session ends or a new model, seed or recipe replaces it).
"""

from __future__ import annotations

import dataclasses
import html
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .. import export, settings
from ..limits import check_number
from ..engine import snapshot as snapshots
from . import gpu
from .gpu import InversionDone, StopFlag
from .handlers import UserError, ensure_idle, file_stem
from .models import forget_private_model
from .state import InversionJob, PhotoStart, PreparedUpload, UIState

STAGE_NAMES = {"w": "projection into W", "w+": "projection into W+", "pti": "pivotal tuning"}
# The W+ rule for photos, stated once: an inverted photo's latent is per-layer, so a single shared W code could
# not reproduce it; a photo session is dragged in W+ and its space cannot be switched to W.
PHOTO_SPACE = "w+"
PHOTO_SPACE_NOTE = ("An image made from a photo is edited in W+ (a single W code would change it); change the "
                    "seed or ψ to start a generated image instead.")


def keeps_photo_space(ui: UIState, space: str) -> bool:
    """Whether asking for `space` must be answered with the photo's W+ instead (the rule above)."""
    return ui.photo is not None and space != PHOTO_SPACE


def default_preset(device_type: str, resolution: int) -> str:
    """The preset the page starts on for a model of `resolution` px (`inversion.presets.default_preset`)."""
    from ..inversion.presets import default_preset as preset_for
    return preset_for(device_type, resolution)


def preset_steps(name: str) -> tuple[int, int, int]:
    """(W, W+, PTI) steps of the preset called `name`; `UserError` for any other name."""
    from ..inversion.presets import get_preset
    return get_preset(name).steps


def max_photo_megapixels() -> float:
    return settings.get().max_photo_mp


def _steps(label: str, value: Any) -> int:
    return int(check_number("inversion_steps", value, label=label))


def make_inversion_config(w_steps: Any, wplus_steps: Any, pti_steps: Any, preset: str | None = None,
                          **overrides: Any) -> Any:
    """Validated `InversionConfig` for the app: the `preset`'s settings (default: Quick's) with the user's step
    counts, previews about 40 times per run."""
    from ..inversion.presets import get_preset

    w, wp, pti = _steps("W steps", w_steps), _steps("W+ steps", wplus_steps), _steps("PTI steps", pti_steps)
    if w + wp == 0:
        raise UserError("Give the projection at least one W or W+ step.")
    chosen = get_preset(preset or "Quick")
    total = w + wp + pti
    kwargs = dict(w_steps=w, wplus_steps=wp, pti_steps=pti, preview_every=max(1, min(10, total // 40)))
    kwargs.update(overrides)
    return chosen.config(**kwargs)


def photo_name(photo: Any) -> str:
    if isinstance(photo, (str, os.PathLike)):
        return Path(photo).name
    return "photo"


def _notes(prepared: Any) -> str:
    """What was done to the upload besides cropping (`inversion.PreparedImage`): its original size, grey or
    transparency handling."""
    parts = [f"from {prepared.size[0]}×{prepared.size[1]} px"]
    if prepared.mode in ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"):
        parts.append("grey photo: converted to colour")
    if prepared.transparent:
        parts.append("transparent areas filled with white")
    return "; ".join(parts)


def prepare_photo(G: Any, photo: Any, face_align: bool = False,
                  max_megapixels: float | None = None) -> tuple[np.ndarray, str]:
    """Check an upload and crop/resize it for `G`: (uint8 [H, W, 3] target, a sentence saying what was done).

    Not an image, too small, too large, damaged, or (with `face_align`) no face/no dlib → `UserError`.
    """
    from ..errors import PhotoError
    from ..inversion import FaceAlignmentUnavailable, prepare

    if photo is None or (isinstance(photo, str) and not photo.strip()):
        raise UserError("Upload a photo first (PNG, JPEG or WebP).")
    if G.img_channels != 3:
        raise UserError(f"This model makes {G.img_channels}-channel images; photo editing needs an RGB model.")
    limit = max_photo_megapixels() if max_megapixels is None else float(max_megapixels)
    try:
        prepared = prepare(photo, G, max_megapixels=limit, face_align=face_align)
    except FaceAlignmentUnavailable as exc:
        raise UserError(f"Face alignment is not available here ({exc}); untick 'Align face' to use a centre "
                        f"crop.") from None
    except PhotoError as exc:
        raise UserError(f"This photo cannot be used: {exc}.") from None
    note = _notes(prepared)
    crop = "aligned on the face and resized" if face_align else "centre-cropped and resized"
    message = f"{crop.capitalize()} to {G.img_width}×{G.img_height} px" + (f" ({note})" if note else "") + "."
    return prepared.target, message


def prepare_upload(ui: UIState, photo: Any, face_align: bool = False) -> tuple[np.ndarray, str]:
    """`prepare_photo` for this session's model, kept in `ui.prepared` so that Invert uses this crop as it is."""
    base = ui.base_model
    target, message = prepare_photo(gpu.generator(base, ui.device), photo, face_align)
    with ui.lock:
        ui.prepared = PreparedUpload(photo=str(photo), face_align=bool(face_align), base=base, target=target)
    return target, message


def _target(ui: UIState, photo: Any, face_align: bool, max_megapixels: float | None) -> np.ndarray:
    """The crop to invert: the one `prepare_upload` made of this very upload, else prepared now."""
    kept = ui.prepared
    if (kept is not None and max_megapixels is None and isinstance(photo, (str, os.PathLike))
            and kept.photo == str(photo) and kept.face_align == bool(face_align) and kept.base == ui.base_model):
        return kept.target
    return prepare_photo(gpu.generator(ui.base_model, ui.device), photo, face_align, max_megapixels)[0]


def start_inversion(ui: UIState, photo: Any, w_steps: Any, wplus_steps: Any, pti_steps: Any,
                    face_align: bool = False, max_megapixels: float | None = None, name: str | None = None,
                    preset: str | None = None, **config_overrides: Any) -> InversionJob:
    """Check the upload and settings and mark an inversion as this session's job; `follow_inversion` runs it.
    `ui` is untouched when the upload or a setting is refused."""
    config = make_inversion_config(w_steps, wplus_steps, pti_steps, preset, **config_overrides)
    target = _target(ui, photo, face_align, max_megapixels)
    with ui.lock:
        ensure_idle(ui, "invert a photo")
        job = InversionJob(kind="inversion", stop=StopFlag(str(ui.workdir / "stop")), target=target, config=config,
                           name=name or photo_name(photo), total_steps=int(config.total_steps))
        job.stop.clear()
        ui.job = job
    return job


def adopt_inversion(ui: UIState, done: InversionDone, name: str, steps: int) -> None:
    """Make the inverted photo the session's start image: a W+ session on the photo's tuned generator (a
    photo's latent is per-layer, so a single shared W code could not reproduce it). Points, masks and history
    are cleared; the drag settings are kept."""
    base = ui.base_model
    old = ui.model
    with ui.lock:
        ui.model = done.model
        ui.snap = done.snapshot
        ui.image = ui.start_image = done.image
        ui.pending = None
        ui.fixed_mask = ui.flexible_mask = None
        ui.frames = {}
        ui.photo = PhotoStart(name=name, base=base, target=done.target, w=done.w, psnr=done.psnr,
                              lpips=done.lpips, loss_name=done.loss_name, loss_note=done.loss_note, steps=steps,
                              seconds=done.seconds)
    if old.private and old != done.model:
        forget_private_model(old)


def follow_inversion(ui: UIState, job: InversionJob, min_interval: float = 0.25
                     ) -> Iterator[tuple[np.ndarray | None, str]]:
    """Run the inversion and yield (latest preview or None, progress HTML) at most every `min_interval` s.
    On success the result is installed in `ui` (`adopt_inversion`); raises `UserError` if it failed (a
    cancelled job just ends, the session unchanged)."""
    last_emit = 0.0
    shown_preview = None
    ended = False
    try:
        for event in gpu.invert(ui.base_model, ui.device, job.target, job.config,
                                dataclasses.replace(ui.snap.config, space=PHOTO_SPACE), job.stop,
                                f"{ui.base_model.label} · {job.name}"):
            if isinstance(event, InversionDone):
                adopt_inversion(ui, event, job.name, job.total_steps)
                job.result = event
                continue
            if job.first_step_at is None:
                job.first_step_at = time.perf_counter()
            job.last = event
            if event.preview is not None:
                job.preview = event.preview
            if time.perf_counter() - last_emit >= min_interval:
                last_emit = time.perf_counter()
                preview = job.preview if job.preview is not shown_preview else None
                shown_preview = job.preview if preview is not None else shown_preview
                yield preview, progress_html(job)
        ended = True
    except UserError:
        raise
    except gpu.failures() as exc:       # a model gone, the worker's or the platform's refusal; a bug goes on
        job.error = exc
        raise UserError(f"The inversion failed: {type(exc).__name__}: {exc}") from None
    finally:
        job.ended_at = time.perf_counter()
        job.cancelled = ended and job.result is None
        with ui.lock:
            job.done.set()
            if ui.job is job:
                ui.job = None


def cancel_inversion(ui: UIState, timeout: float = 60.0) -> str:
    """Cancel a running inversion (it ends before its next step) and wait for it; the image is kept."""
    job = ui.job
    if not isinstance(job, InversionJob):
        return "No inversion is running."
    job.stop.set()
    job.done.wait(timeout)
    return outcome(job)


def outcome(job: InversionJob) -> str:
    """One sentence on how a finished job ended."""
    if job.error is not None:
        return f"The inversion failed: {job.error}"
    if job.result is None:
        step = job.last.step if job.last is not None else 0
        return f"Inversion cancelled after {step} of {job.total_steps} steps; the previous image is kept."
    return "The inversion finished."


# ----------------------------------------------------------------------------------------------------------
# Showing progress and quality.

def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress_html(job: InversionJob) -> str:
    """A progress bar and one line: step, stage, loss, time per step and the time left."""
    event = job.last
    if event is None:
        return ("<div class='inv-status'><progress></progress><br>Preparing: sampling the mapping network and "
                "loading the reconstruction loss (the first run downloads the LPIPS weights, about 550 MB)…</div>")
    rate = job.seconds_per_step()
    timing = "" if rate is None else (f" · {rate:.2f} s/step · about "
                                      f"{_duration(rate * (event.total_steps - event.step))} left")
    return (f"<div class='inv-status'><progress value='{event.step}' max='{event.total_steps}'></progress><br>"
            f"Step {event.step}/{event.total_steps} · {STAGE_NAMES.get(event.stage, event.stage)} · "
            f"loss {event.loss:.4f}{timing}</div>")


def quality_html(photo: PhotoStart) -> str:
    """The quality readout of a finished inversion in short plain words: time, PSNR, LPIPS when measured, and
    which comparison guided the fit; why the simpler one was used sits in a collapsed note."""
    lpips = "" if photo.lpips is None else f" · LPIPS {photo.lpips:.3f}"
    loss = ("compared by a perceptual network (LPIPS)" if photo.lpips is not None
            else "compared pixel by pixel (the perceptual network could not be loaded)")
    text = (f"<div class='inv-status'><b>Inverted</b> in {_duration(photo.seconds)} ({photo.steps} steps) · "
            f"PSNR {photo.psnr:.1f} dB{lpips} · {html.escape(loss)}")
    if photo.loss_note and photo.loss_name != "lpips-vgg16":
        text += f"<details><summary>details</summary><small>{html.escape(photo.loss_note)}</small></details>"
    return text + "</div>"


def comparison(target: np.ndarray, other: np.ndarray | None, min_size: int = 256) -> np.ndarray:
    """The prepared photo and (when given) the reconstruction side by side, upscaled to about `min_size`."""
    h, w = target.shape[:2]
    s = max(1, min_size // max(h, w))
    tiles = [target] if other is None else [target, np.full((h, max(2, w // 32), 3), 255, np.uint8), other]
    row = np.concatenate(tiles, axis=1)
    return np.asarray(Image.fromarray(row).resize((row.shape[1] * s, h * s), Image.NEAREST)) if s > 1 else row


def estimate_text(device: str, total_steps: int, seconds_per_step: float | None) -> str:
    """What the user can expect before starting: the device and, once measured here, the duration."""
    where = f"Runs on **{device}**"
    if seconds_per_step is None:
        slow = " (CPU inversion is slow: seconds per step at 256 px, more at 512 px)" if device == "cpu" else ""
        return f"{where}{slow}; {total_steps} steps. The time per step shows once it starts."
    return (f"{where}; {total_steps} steps ≈ {_duration(seconds_per_step * total_steps)} "
            f"(measured on this server).")


# ----------------------------------------------------------------------------------------------------------
# Export.

def export_tuned_generator(ui: UIState, out_dir: str | os.PathLike | None = None) -> Path:
    """Zip of the session's tuned generator (`model.safetensors` + `config.json`, loadable with
    `load_generator(folder)`), the inverted latent and the current (edited) latent."""
    ensure_idle(ui, "export")
    if ui.photo is None:
        raise UserError("Only an image made from your photo has a tuned generator: upload a photo and invert it.")
    out = Path(out_dir) if out_dir is not None else ui.workdir / "exports"
    out.mkdir(parents=True, exist_ok=True)
    stem = file_stem(ui)
    folder = Path(tempfile.mkdtemp(prefix="tuned-", dir=ui.workdir))
    try:
        for file in Path(ui.model.source).iterdir():
            shutil.copy2(file, folder / file.name)
        export.save_latent(ui.photo.w, folder / "inverted-ws.npy")
        export.save_latent(snapshots.full_latent(ui.snap), folder / "edited-ws.npy")
        path = out / f"{stem}-tuned-generator.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for file in sorted(folder.iterdir()):
                zf.write(file, f"{stem}-tuned-generator/{file.name}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path
