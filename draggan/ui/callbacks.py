"""Gradio-facing callbacks: adapt `handlers` to component values, toasts and progress bars.

One `StudioApp` per process holds what sessions share (the generator cache, the device, the model list and
limits); everything per-user lives in the `UIState` passed in through `gr.State`. A refused request
(`UserError`, bad model file, unavailable model) becomes a warning toast and leaves the page as it was.
"""

from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from .. import export
from ..devices import pick_device
from . import handlers, photo
from .handlers import UserError
from .models import GeneratorCache, ModelChoice, check_upload, model_choices
from .state import DragParams, UIState

MAX_UPLOAD_ENV = "DRAGGAN_MAX_UPLOAD_MB"
CONCURRENCY_ENV = "DRAGGAN_CONCURRENCY"
SKIP = gr.skip


def _gpu_decorator(env: str, default_seconds: int) -> Callable[[Callable], Callable]:
    """`spaces.GPU` on Hugging Face ZeroGPU hardware (the `spaces` package is importable), else identity."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=int(os.environ.get(env, str(default_seconds))))


gpu = _gpu_decorator("DRAGGAN_GPU_DURATION", 120)
gpu_long = _gpu_decorator("DRAGGAN_GPU_INVERT_DURATION", 600)


def _load_errors() -> tuple[type[BaseException], ...]:
    from ..checkpoints import ModelFormatError, ModelUnavailableError, UnknownModelError, UnsafePickleError
    return (ModelFormatError, ModelUnavailableError, UnknownModelError, UnsafePickleError, FileNotFoundError,
            ValueError)


class StudioApp:
    """Shared, read-only-after-start context of the app, and every event callback."""

    def __init__(self, device: str | None = None, max_upload_mb: float | None = None,
                 hub_online: bool | None = None, cache: GeneratorCache | None = None) -> None:
        self.device = pick_device(device)
        self.max_upload_mb = float(os.environ.get(MAX_UPLOAD_ENV, "2048")) if max_upload_mb is None \
            else float(max_upload_mb)
        self.cache = cache or GeneratorCache()
        self.choices: list[ModelChoice] = model_choices(hub_online)
        default_limit = 4 if self.device.type == "cuda" else 2
        self.concurrency = max(1, int(os.environ.get(CONCURRENCY_ENV, str(default_limit))))
        self.step_seconds: dict[tuple[str, str], float] = {}   # measured inversion time per step, per model

    # ------------------------------------------------------------------ model list

    @property
    def available(self) -> list[ModelChoice]:
        return [c for c in self.choices if c.available]

    def dropdown_choices(self) -> list[tuple[str, str]]:
        return [(c.label, c.source) for c in self.available]

    def default_model(self) -> str | None:
        return self.available[0].source if self.available else None

    def drag_lr(self, source: str | None) -> float:
        """The step size the app starts with for a model: the zoo's recommendation, else the app default."""
        for c in self.choices:
            if c.source == source and c.drag_lr is not None:
                return c.drag_lr
        return DragParams.lr

    def models_note(self) -> str:
        """Short Markdown about models that cannot be used right now (empty when all can)."""
        missing = [c for c in self.choices if not c.available]
        if not self.available:
            return "**No model is available offline**: upload one under *Your own model*."
        if not missing:
            return ""
        return (f"{len(missing)} zoo model(s) cannot be fetched right now (the Hugging Face Hub is unreachable "
                f"and they are not cached); they are listed under *Unavailable models*.")

    def unavailable_details(self) -> str:
        return "\n".join(f"- {c.label}: {c.reason}" for c in self.choices if not c.available)

    def label_of(self, source: str) -> str:
        for c in self.choices:
            if c.source == source:
                return c.label
        return Path(source).name

    def _find_choice(self, model: str) -> ModelChoice:
        for c in self.choices:
            if model in (c.source, c.label):
                return c
        resolved = str(Path(model).expanduser().resolve())
        for c in self.choices:
            if c.source == resolved:
                return c
        raise UserError(f"Unknown model {model!r}; choose one of: {', '.join(c.source for c in self.available)}")

    def generator(self, source: str, progress: gr.Progress | None = None) -> Any:
        """The shared generator for `source`, loading it (with a download bar) on first use."""
        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress((done, total), desc=f"Downloading {Path(source).name}", unit="bytes")

        try:
            return self.cache.get(source, self.device, progress=report)
        except _load_errors() as exc:
            raise UserError(f"Could not load the model: {exc}") from None

    # ------------------------------------------------------------------ outputs

    @staticmethod
    def _editor_value(ui: UIState) -> dict[str, Any]:
        return {"background": handlers.plain_view(ui), "layers": [handlers.mask_layer(ui)], "composite": None}

    def _all(self, ui: UIState | None, note: str = "") -> tuple[Any, Any, Any, str]:
        """(state, image, editor, stats) for a state that changed wholesale."""
        if ui is None:
            return None, None, None, note or self.models_note()
        return ui, handlers.view(ui), self._editor_value(ui), handlers.stats_text(ui)

    @staticmethod
    def release_state(ui: UIState | None) -> None:
        """`gr.State` delete callback: the browser session ended, free its drag session."""
        handlers.release(ui)

    @staticmethod
    def _need(ui: UIState | None) -> UIState:
        if ui is None or ui.session is None:
            raise UserError("Load a model first (pick one, or upload your own).")
        return ui

    # ------------------------------------------------------------------ model, latent, settings

    def init_session(self, model: str | None, seed: Any, psi: Any, space: str, lr: Any, max_steps: Any,
                     render_every: Any, mask_lambda: Any, progress: gr.Progress = gr.Progress()):
        """Page load: build this browser session's state on the selected (or default) model."""
        source = model or self.default_model()
        if source is None:
            return self._all(None)
        try:
            params = handlers.make_params(lr, max_steps, render_every, mask_lambda)
            G = self.generator(source, progress)
            return self._all(handlers.make_state(G, source, self.label_of(source), seed, psi, space, params))
        except UserError as exc:
            gr.Warning(str(exc))
            return self._all(None, str(exc))

    def change_model(self, ui: UIState | None, model: str | None, seed: Any, psi: Any, space: str,
                     progress: gr.Progress = gr.Progress()):
        """Model picked (outputs: state, image, editor, stats, lr): a new image, with the model's step size."""
        if not model or (ui is not None and ui.model_source == model):
            return SKIP(), SKIP(), SKIP(), SKIP(), SKIP()
        lr = self.drag_lr(model)
        outputs = self._new_image(ui, model, self.label_of(model), seed, psi, space, progress, lr=lr)
        return (*outputs, lr if isinstance(outputs[0], UIState) else SKIP())

    def _new_image(self, ui: UIState | None, source: str, label: str, seed: Any, psi: Any, space: str,
                   progress: gr.Progress | None, lr: float | None = None):
        try:
            if ui is not None:
                handlers.ensure_idle(ui, "change the model or latent")
            G = self.generator(source, progress)
            params = ui.params if ui is not None else DragParams()
            if lr is not None:
                params = dataclasses.replace(params, lr=lr)
            new = handlers.make_state(G, source, label, seed, psi, space, params)
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP(), SKIP(), SKIP()
        if ui is not None:
            new.show_mask = ui.show_mask
            had_photo = ui.photo is not None
            handlers.release(ui)
            gr.Info("New image: points, mask and history were reset"
                    + ("; the photo's tuned generator was dropped." if had_photo else "."))
        return self._all(new)

    def load_own_model(self, ui: UIState | None, upload: str | None, hub_ref: str, seed: Any, psi: Any,
                       space: str, progress: gr.Progress = gr.Progress()):
        """'Your own model': an uploaded .pkl/.safetensors file, else a Hub `repo_id/filename`."""
        from ..checkpoints.hub import parse_hub_ref

        try:
            if upload:
                file = check_upload(upload, self.max_upload_mb)
                source, label = self.convert_upload(file), f"{file.name} (uploaded)"
            elif hub_ref and hub_ref.strip():
                ref = parse_hub_ref(hub_ref.strip())
                if ref is None:
                    raise ValueError(f"'{hub_ref}' is not a Hub file: write owner/repo/file.pkl")
                text = hub_ref.strip()
                source = text if text.startswith(("http://", "https://", "hf://")) else f"hf://{text}"
                label = f"{Path(ref.filename).name} (Hub)"
            else:
                raise ValueError("Upload a .pkl / .safetensors file or type a Hub file (owner/repo/file.pkl).")
        except (ValueError, OSError) as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP(), SKIP(), SKIP()
        return self._new_image(ui, source, label, seed, psi, space, progress)

    @staticmethod
    def convert_upload(file: Path) -> str:
        """An uploaded model file, converted in a limited child process; the converted entry to load."""
        from ..checkpoints.sandbox import convert_untrusted
        try:
            return str(convert_untrusted(file, name=file.name))
        except _load_errors() as exc:
            raise ValueError(f"Could not load the model: {exc}") from None

    def change_latent(self, ui: UIState | None, seed: Any, psi: Any, space: str):
        """Seed, ψ or space changed: a new image (outputs: state, image, editor, stats, space radio).

        A photo session stays in W+ (its latent is per-layer; one shared W code would change the image): choosing
        W there flips the radio back. A new seed or ψ replaces the photo with a generated image."""
        if ui is None:
            return SKIP(), SKIP(), SKIP(), SKIP(), SKIP()
        try:
            same_start = int(seed) == ui.seed and float(psi) == ui.psi
        except (TypeError, ValueError):
            same_start = False
        if same_start and ui.photo is not None and space != ui.space:
            gr.Warning("An image made from a photo is edited in W+ (a single W code would change it); change "
                       "the seed or ψ to start a generated image instead.")
            return SKIP(), SKIP(), SKIP(), SKIP(), ui.space
        if same_start and space == ui.space:
            return SKIP(), SKIP(), SKIP(), SKIP(), SKIP()
        return (*self._new_image(ui, ui.model_source, ui.model_label, seed, psi, space, None), SKIP())

    @staticmethod
    def random_seed() -> int:
        return int(np.random.randint(0, 2**31 - 1))

    def update_params(self, ui: UIState | None, lr: Any, max_steps: Any, render_every: Any, mask_lambda: Any):
        if ui is None:
            return
        try:
            handlers.update_params(ui, lr, max_steps, render_every, mask_lambda)
        except UserError as exc:
            gr.Warning(str(exc))

    # ------------------------------------------------------------------ points and mask

    def _points_action(self, ui: UIState | None, action: Callable[[UIState], str]):
        try:
            ui = self._need(ui)
            action(ui)
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP()
        return handlers.view(ui), handlers.stats_text(ui)

    def click(self, ui: UIState | None, evt: gr.SelectData):
        return self._points_action(ui, lambda u: handlers.add_point(u, evt.index))

    def remove_last(self, ui: UIState | None):
        return self._points_action(ui, handlers.remove_last_point)

    def clear_points(self, ui: UIState | None):
        return self._points_action(ui, handlers.clear_points)

    def toggle_mask(self, ui: UIState | None, show: bool):
        if ui is None:
            return SKIP()
        ui.show_mask = bool(show)
        return handlers.view(ui)

    def paint_mask(self, ui: UIState | None, editor: Any):
        if ui is None:
            return SKIP(), SKIP()
        try:
            handlers.ensure_idle(ui, "change the mask")
            fixed, flexible = handlers.masks_from_editor(editor, ui.height, ui.width)
            handlers.set_masks(ui, fixed, flexible)
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP()
        return handlers.view(ui), handlers.stats_text(ui)

    def reset_mask(self, ui: UIState | None):
        if ui is None:
            return SKIP(), SKIP(), SKIP()
        handlers.reset_mask(ui)
        return handlers.view(ui), self._editor_value(ui), handlers.stats_text(ui)

    # ------------------------------------------------------------------ drag

    @gpu
    def start(self, ui: UIState | None) -> Iterator[tuple[Any, Any, Any]]:
        """Start (or resume) a drag and stream the image and stats until it ends or is stopped."""
        try:
            ui = self._need(ui)
            job = handlers.start_drag(ui)
        except UserError as exc:
            gr.Warning(str(exc))
            yield SKIP(), SKIP(), SKIP()
            return
        try:
            for image, stats in handlers.follow(ui, job):
                yield image, stats, SKIP()
        except UserError as exc:
            gr.Warning(str(exc))
        yield handlers.view(ui), handlers.stats_text(ui), self._editor_value(ui)

    def stop(self, ui: UIState | None):
        if ui is None:
            return SKIP(), SKIP(), SKIP()
        message = handlers.stop_drag(ui)
        if ui.job is None:
            gr.Info(message)
        return handlers.view(ui), handlers.stats_text(ui), self._editor_value(ui)

    def _history_action(self, ui: UIState | None, action: Callable[[UIState], str]):
        try:
            ui = self._need(ui)
            message = action(ui)
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP(), SKIP()
        if message.startswith("Nothing"):
            gr.Info(message)
        return handlers.view(ui), self._editor_value(ui), handlers.stats_text(ui)

    def undo(self, ui: UIState | None):
        return self._history_action(ui, handlers.undo)

    def redo(self, ui: UIState | None):
        return self._history_action(ui, handlers.redo)

    def reset_image(self, ui: UIState | None):
        return self._history_action(ui, handlers.reset_image)

    # ------------------------------------------------------------------ export

    def export(self, ui: UIState | None, what: str):
        try:
            ui = self._need(ui)
            handlers.ensure_idle(ui, "export")
            if what == "png":
                path = handlers.export_png(ui)
            elif what == "latent":
                path = handlers.export_latent(ui)
            elif what in ("gif", "mp4"):
                path = handlers.export_animation(ui, what)
            elif what == "recipe":
                path = handlers.export_recipe(ui)
            elif what == "tuned":
                path = photo.export_tuned_generator(ui)
            else:
                raise UserError(f"unknown export {what!r}")
        except (UserError, ValueError, RuntimeError) as exc:
            gr.Warning(str(exc))
            return SKIP()
        return gr.update(value=str(path), visible=True)

    def _recipe_source(self, ui: UIState | None, model: str) -> str:
        """The model to replay a recipe on: an offered model or Hub file it names, else this session's model.

        A recipe never makes the server open an arbitrary path: unknown local paths fall back to the model
        the user has loaded (a recipe made elsewhere on an uploaded model replays on the same upload here).
        """
        from ..checkpoints.hub import parse_hub_ref

        if ui is not None and model == ui.model_source:
            return model
        try:
            choice = self._find_choice(model)
            if choice.available:
                return choice.source
        except UserError:
            if not Path(model).is_absolute() and not model.startswith(".") and parse_hub_ref(model) is not None:
                return model if model.startswith("hf://") else f"hf://{model}"
        if ui is None:
            raise UserError(f"The recipe's model {model!r} is not available here: load it under "
                            f"'Your own model', then load the recipe again.")
        gr.Info(f"The recipe's model {model!r} is not available here; replaying it on {ui.model_label}.")
        return ui.model_source

    def load_recipe(self, ui: UIState | None, file: str | None, progress: gr.Progress = gr.Progress()):
        if not file:
            return SKIP(), SKIP(), SKIP(), SKIP()
        try:
            if ui is not None:
                handlers.ensure_idle(ui, "load a recipe")
            recipe = export.load_recipe(file)
            G = self.generator(self._recipe_source(ui, recipe.model), progress)
            params = ui.params if ui is not None else DragParams()
            new = handlers.state_from_recipe(recipe, G, params)
        except (UserError, export.RecipeError) as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP(), SKIP(), SKIP()
        if ui is not None:
            handlers.release(ui)
        gr.Info(f"Replayed {len(recipe.drags)} drag(s) from the recipe.")
        return self._all(new)

    # ------------------------------------------------------------------ your own photo

    @staticmethod
    def preset(name: str) -> tuple[int, int, int]:
        """Inversion preset → (W steps, W+ steps, PTI steps)."""
        try:
            return photo.preset_steps(name)
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP(), SKIP()

    def default_preset(self) -> str:
        return photo.default_preset(self.device.type)

    def estimate(self, w_steps: Any, wplus_steps: Any, pti_steps: Any, ui: UIState | None = None) -> str:
        """The device and, once an inversion ran on this model here, the expected duration."""
        try:
            total = sum(int(v) for v in (w_steps, wplus_steps, pti_steps))
        except (TypeError, ValueError):
            return SKIP()
        rate = self.step_seconds.get((ui.model_source, str(self.device))) if ui is not None else None
        return photo.estimate_text(str(self.device), total, rate)

    def prepare_photo(self, ui: UIState | None, file: str | None, face_align: bool):
        """Upload (or the face-align box): check the photo and show the crop the model will be fitted to
        (outputs: photo view, photo status); nothing to show before a photo is uploaded."""
        if not file:
            return SKIP(), SKIP()
        try:
            ui = self._need(ui)
            target, message = photo.prepare_photo(self.generator(ui.model_source), file, bool(face_align))
        except UserError as exc:
            gr.Warning(str(exc))
            return SKIP(), SKIP()
        return photo.comparison(target, None), f"<div class='inv-status'>{html.escape(message)} Press " \
                                               f"<b>Invert photo</b> to fit the model to it.</div>"

    @gpu_long
    def invert_photo(self, ui: UIState | None, file: str | None, face_align: bool, w_steps: Any,
                     wplus_steps: Any, pti_steps: Any) -> Iterator[tuple[Any, ...]]:
        """Invert the uploaded photo in the background and stream progress; when it succeeds the session drags
        the inverted latent on its own tuned generator. Outputs: state, image, editor, stats, photo view,
        photo status, space radio."""
        keep = (SKIP(), SKIP(), SKIP())
        try:
            ui = self._need(ui)
            G = self.generator(ui.model_source)
            job = photo.start_inversion(ui, G, file, w_steps, wplus_steps, pti_steps, face_align=bool(face_align),
                                        name=photo.photo_name(file) if file else None)
        except UserError as exc:
            gr.Warning(str(exc))
            yield *keep, SKIP(), SKIP(), SKIP(), SKIP()
            return
        yield *keep, handlers.stats_text(ui), photo.comparison(job.target, None), photo.progress_html(job), SKIP()
        try:
            for preview, status in photo.follow_inversion(job):
                view = SKIP() if preview is None else photo.comparison(job.target, preview)
                yield *keep, handlers.stats_text(ui), view, status, SKIP()
        except UserError as exc:
            gr.Warning(str(exc))
            yield *keep, handlers.stats_text(ui), SKIP(), f"<div class='inv-status'>{html.escape(str(exc))}</div>", \
                SKIP()
            return
        rate = job.seconds_per_step()
        if rate is not None:
            self.step_seconds[(ui.model_source, str(self.device))] = rate
        if job.cancelled or job.result is None:
            message = photo.outcome(job)
            yield *keep, handlers.stats_text(ui), photo.comparison(job.target, None), \
                f"<div class='inv-status'>{html.escape(message)}</div>", SKIP()
            return
        gr.Info("Photo inverted: drag it as usual (on your session's own tuned copy of the model).")
        yield (*self._all(ui), photo.comparison(ui.photo.target, ui.start_image), photo.quality_html(ui.photo),
               ui.space)

    def cancel_photo(self, ui: UIState | None):
        """Cancel a running inversion; the session keeps its image (outputs: stats, photo status)."""
        if ui is None:
            return SKIP(), SKIP()
        message = photo.cancel_inversion(ui)
        gr.Info(message)
        return handlers.stats_text(ui), f"<div class='inv-status'>{html.escape(message)}</div>"

    # ------------------------------------------------------------------ headless API

    def api_models(self) -> list[dict[str, Any]]:
        """Models this server can use: source (pass it to /drag), label, and availability."""
        return [{"source": c.source, "label": c.label, "available": c.available, "reason": c.reason}
                for c in self.choices]

    @gpu
    def api_drag(self, model: str, seed: float, points: str, steps: float, psi: float, space: str, lr: float):
        """Run one drag headlessly: returns the result image and a JSON summary."""
        try:
            choice = self._find_choice(model or (self.default_model() or ""))
            if not choice.available:
                raise UserError(f"Model {choice.label} is not available: {choice.reason}")
            G = self.generator(choice.source)
            ui, job = handlers.headless_drag(G, choice.source, choice.label, seed, psi, space or "w+", points,
                                             steps, lr)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
        info = {"model": choice.source, "steps": job.steps, "handles": [list(p) for p in ui.handles],
                "targets": [list(p) for p in ui.targets],
                "distances": [float(np.hypot(tx - x, ty - y)) for (x, y), (tx, ty) in zip(ui.handles, ui.targets)],
                "start_image_changed": bool((ui.image != ui.start_image).any())}
        image = ui.image
        handlers.release(ui)
        return image, info
