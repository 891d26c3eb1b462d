"""Model and latent panel: the page's first image, picking or uploading a model, seed, ψ and latent space."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import numpy as np

from ...engine import snapshot as snapshots
from ...service import handlers
from ...service.examples import Example
from ...service.handlers import UserError
from ...service.models import check_upload
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, unchanged, whole, whole_outputs


class ModelPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def _progress(self, progress: gr.Progress | None, name: str):
        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress((done, total), desc=f"Downloading {name}", unit="bytes")
        return report

    def _new_state(self, ui: UIState | None, source: str, label: str, seed: Any, psi: Any, space: str,
                   progress: gr.Progress | None, lr: float | None = None) -> UIState:
        """A new session state on `source`; raises UserError (and changes nothing) when refused."""
        if ui is not None:
            handlers.ensure_idle(ui, "change the model or latent")
        ref = self.studio.ref(source, label)
        self.studio.load(ref, self._progress(progress, Path(source).name))
        config = ui.snap.config if ui is not None else handlers.make_config()
        config = dataclasses.replace(config, lr=lr if lr is not None else config.lr)
        new = handlers.make_state(ref, str(self.studio.device), seed, psi, space, config,
                                  ui.render_every if ui is not None else 0)
        if ui is not None:
            new.show_mask = ui.show_mask
        return new

    def _replace(self, ui: UIState | None, new: UIState) -> dict:
        """`new` replaces `ui`; what was reset is said in the new image's status line (not a toast over it)."""
        if ui is not None:
            had_photo = ui.photo is not None
            changed = bool(ui.snap.drags() or ui.handles or ui.fixed_mask is not None or ui.flexible_mask is not None)
            handlers.replace(ui, new)
            if changed or had_photo:
                new.notice = ("New image: points, mask and history were reset"
                              + ("; the photo's tuned generator was dropped." if had_photo else "."))
        return whole(self.page, new)

    def init_session(self, model: str | None, seed: Any, psi: Any, space: str, lr: Any, max_steps: Any,
                     render_every: Any, mask_lambda: Any, progress: gr.Progress = gr.Progress()) -> dict:
        """Page load: build this browser session's state on the selected (or default) model."""
        page = self.page
        source = model or self.studio.default_model()
        if source is None:
            return {page.stats: self.studio.models_note()}
        try:
            config = handlers.make_config(lr, max_steps, mask_lambda, space)
            ref = self.studio.ref(source)
            self.studio.load(ref, self._progress(progress, Path(source).name))
            ui = handlers.make_state(ref, str(self.studio.device), seed, psi, space, config, render_every)
        except UserError as exc:
            gr.Warning(str(exc))
            return {page.stats: str(exc)}
        return whole(page, ui)

    def change_model(self, ui: UIState | None, model: str | None, seed: Any, psi: Any, space: str,
                     progress: gr.Progress = gr.Progress()) -> dict:
        """Model picked: a new image, with the model's recommended step size."""
        if not model or (ui is not None and ui.photo is None and ui.model.source == model):
            return unchanged()
        lr = self.studio.drag_lr(model)
        try:
            new = self._new_state(ui, model, self.studio.label_of(model), seed, psi, space, progress, lr=lr)
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        return {**self._replace(ui, new), self.page.lr: lr}

    def load_own_model(self, ui: UIState | None, upload: str | None, hub_ref: str, seed: Any, psi: Any,
                       space: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None) -> dict:
        """'Your own model': an uploaded .pkl/.safetensors file, else a Hub `repo_id/filename`. Converting
        an upload is a job: one at a time per visitor (`Studio.visitors`)."""
        try:
            slot = self.studio.visitors.claim(request, "a model conversion")
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        with slot:
            return self._load_own(ui, upload, hub_ref, seed, psi, space, progress)

    def _load_own(self, ui: UIState | None, upload: str | None, hub_ref: str, seed: Any, psi: Any, space: str,
                  progress: gr.Progress | None) -> dict:
        from ...checkpoints.hub import parse_hub_ref

        try:
            if upload:
                file = check_upload(upload, self.studio.max_upload_mb)
                source, label = self.studio.convert_upload(file), f"{file.name} (uploaded)"
            elif hub_ref and hub_ref.strip():
                ref = parse_hub_ref(hub_ref.strip())
                if ref is None:
                    raise UserError(f"'{hub_ref}' is not a Hub file: write owner/repo/file.pkl")
                text = hub_ref.strip()
                source = text if text.startswith(("http://", "https://", "hf://")) else f"hf://{text}"
                label = f"{Path(ref.filename).name} (Hub)"
            else:
                raise UserError("Upload a .pkl / .safetensors file or type a Hub file (owner/repo/file.pkl).")
            new = self._new_state(ui, source, label, seed, psi, space, progress)
        except (UserError, ValueError, OSError) as exc:
            gr.Warning(str(exc))
            return unchanged()
        return self._replace(ui, new)

    def change_latent(self, ui: UIState | None, seed: Any, psi: Any, space: str) -> Iterator[dict]:
        """Seed (Enter or leaving the box), ψ or space changed: a new image, once per change (`apply_latent`).

        A generator, so that a click that waited for this image answers after it: Gradio sends a yield's
        outputs before it asks for the next one, and only then is `view_sent` set, which the click waits for
        (`DragPanel.click`); its point is thus drawn over the new image, never overwritten by it. The last
        yield changes nothing (Gradio sends a generator's last outputs twice)."""
        if ui is None:
            yield unchanged()
            return
        with ui.latest() as ui:
            shown = self.apply_latent(ui, seed, psi, space)
            new = shown.get(self.page.state)
            if new is not None:
                new.view_sent = threading.Event()
        yield shown or unchanged()
        if new is not None:
            new.view_sent.set()
            yield unchanged()

    def apply_latent(self, ui: UIState, seed: Any, psi: Any, space: str) -> dict:
        """The outputs of a new image at the page's (seed, ψ, space), {} when they are `ui`'s already: the
        seed box's Enter, its blur and a click on the image that caused the blur all ask, so only the first
        to come makes the image (call with `ui.latest()` held). A photo session stays in W+ (its latent is
        per-layer; one shared W code would change the image): choosing W there flips the radio back. A new
        seed or ψ replaces the photo with a generated image of the model it was made from."""
        try:
            same_start = int(seed) == ui.seed and float(psi) == ui.psi
        except (TypeError, ValueError):
            same_start = False
        if same_start and ui.photo is not None and space != ui.space:
            gr.Warning("An image made from a photo is edited in W+ (a single W code would change it); change "
                       "the seed or ψ to start a generated image instead.")
            return {self.page.space: ui.space}
        if same_start and (space == ui.space or ui.photo is not None):
            return {}
        base = ui.photo.base if ui.photo is not None else ui.model
        try:
            new = self._new_state(ui, base.source, base.label, seed, psi, space, None)
        except UserError as exc:
            gr.Warning(str(exc))
            return {}
        return self._replace(ui, new)

    def load_example(self, ui: UIState | None, example: Example, space: str,
                     progress: gr.Progress = gr.Progress()) -> dict:
        """An example button: its model at its seed and ψ with its points set, ready for Start."""
        p = self.page
        lr = self.studio.drag_lr(example.model)
        try:
            choice = self.studio.find_choice(example.model)
            if not choice.available:
                raise UserError(f"{choice.label} is not available here: {choice.reason}")
            new = self._new_state(ui, choice.source, choice.label, example.seed, example.psi, space, progress,
                                  lr=lr)
            handlers.check_points(example.handles, example.targets, new.height, new.width)
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        new.snap = snapshots.set_points(new.snap, example.handles, example.targets)
        new.notice = f"Example “{example.label}”: press Start to drag the points."
        handlers.replace(ui, new)
        return {**whole(p, new), p.model: choice.source, p.seed: example.seed, p.psi: example.psi, p.lr: lr}

    def bundled(self) -> dict:
        """The "use the bundled model" button: pick it in the dropdown (whose change loads it)."""
        source = self.studio.bundled_model()
        return {self.page.model: source} if source else {}

    @staticmethod
    def random_seed() -> int:
        return int(np.random.randint(0, 2**31 - 1))

    def update_params(self, ui: UIState | None, lr: Any, max_steps: Any, render_every: Any,
                      mask_lambda: Any, tracker: str | None = None) -> None:
        if ui is None:
            return
        try:
            handlers.update_params(ui, lr, max_steps, render_every, mask_lambda, tracker)
        except (UserError, ValueError) as exc:
            gr.Warning(str(exc))

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        full = whole_outputs(p)
        settings = [p.lr, p.max_steps, p.render_every, p.mask_lambda]
        p.demo.load(self.init_session, [p.model, p.seed, p.psi, p.space, *settings], full, **heavy,
                    api_visibility="private")
        p.model.change(self.change_model, [p.state, p.model, p.seed, p.psi, p.space], [*full, p.lr], **heavy,
                       api_visibility="private")
        p.load_own.click(self.load_own_model, [p.state, p.upload, p.hub_ref, p.seed, p.psi, p.space], full,
                         **heavy, api_visibility="private")
        # Enter and blur both ask (`apply_latent` makes one image). The progress shows on the status line only:
        # an overlay on the image would swallow the click whose mouse-down blurred the seed box.
        gr.on([p.seed.submit, p.seed.blur, p.psi.release, p.space.change], self.change_latent,
              [p.state, p.seed, p.psi, p.space], [*full, p.space], show_progress_on=p.stats, **heavy)
        p.dice.click(self.random_seed, None, p.seed, **light).then(
            self.change_latent, [p.state, p.seed, p.psi, p.space], [*full, p.space], show_progress_on=p.stats, **heavy)
        gr.on([c.change for c in [*settings, p.tracker]], self.update_params, [p.state, *settings, p.tracker], None,
              **light)
        p.use_bundled.click(self.bundled, None, p.model, **light)
        for example, button in p.example_buttons.items():
            button.click(lambda ui, space, progress=gr.Progress(), example=example:
                         self.load_example(ui, example, space, progress),
                         [p.state, p.space], [*full, p.model, p.seed, p.psi, p.lr], **heavy,
                         api_visibility="private")
