"""Model and latent panel: the page's first image, picking or uploading a model, seed, ψ and latent space."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from ...engine import snapshot as snapshots
from ...limits import check_number
from ...engine.config import SPACES, DragConfig
from ...limits import LIMITS
from ...service import examples, handlers, photo
from ...service.examples import Example
from ...service.handlers import UserError
from ...service.models import ModelRef
from ...service.models import check_upload
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, answer, unchanged, whole, whole_outputs


class ModelPanel:
    def __init__(self, studio: Studio, page: Page, preset_for: Callable[[UIState], dict] | None = None) -> None:
        self.studio = studio
        self.page = page
        self.preset_for = preset_for or (lambda ui: {})   # PhotoPanel.preset_for: a new model's photo preset

    def controls(self) -> None:
        """The Model and Latent sections of the controls column: picker, bundled shortcut, own model, seed, ψ,
        latent space."""
        p, studio = self.page, self.studio
        default, bundled = studio.default_model(), studio.bundled_model()
        with gr.Accordion("Model", open=True):
            p.model = gr.Dropdown(studio.dropdown_choices(), value=default, label="Model",
                                  info="Downloads on first use; loaded models are shared by all users.",
                                  elem_id="model-picker")
            p.use_bundled = gr.Button(f"Use {studio.label_of(bundled)} (no download)" if bundled else "",
                                      size="sm", visible=bool(bundled and bundled != default))
            gr.Markdown(studio.models_note(), elem_id="models-note")
            if studio.unavailable_details():
                with gr.Accordion("Unavailable models", open=False):
                    gr.Markdown(studio.unavailable_details(), elem_id="models-note")
            with gr.Accordion("Your own model", open=False):
                p.upload = gr.File(label=f"Upload a network pickle or safetensors "
                                         f"(≤ {studio.max_upload_mb:.0f} MB)",
                                   file_types=[".pkl", ".safetensors"], height=110)
                p.hub_ref = gr.Textbox(label="…or a Hugging Face Hub file",
                                       placeholder="DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl")
                p.load_own = gr.Button("Load this model")
        with gr.Accordion("Latent", open=True):
            with gr.Row(equal_height=True):
                p.seed = gr.Number(0, label="Seed", precision=0, scale=3, **LIMITS.seed.field())
                p.dice = gr.Button("Random", scale=1, min_width=80)
            p.psi = gr.Slider(value=0.7, label="Truncation ψ", **LIMITS.psi.field())
            p.space = gr.Radio(list(SPACES), value=DragConfig.space, label="Latent space",
                               info="w+ edits each layer's code (more precise); w keeps one shared code.")

    def examples(self) -> None:
        """The row of example buttons above the image (the examples whose model is offered here)."""
        p = self.page
        example_list = examples.offered(c.source for c in self.studio.available)
        p.example_buttons = {}
        if example_list:
            with gr.Row(elem_id="examples"):
                gr.Markdown("**Try an example:**", container=False)
                for example in example_list:
                    p.example_buttons[example] = gr.Button(example.label, size="sm")

    def _progress(self, progress: gr.Progress | None, name: str):
        def report(done: int, total: int | None) -> None:
            if progress is not None and total:
                progress((done, total), desc=f"Downloading {name}", unit="bytes")
        return report

    def _new_state(self, ui: UIState | None, ref: ModelRef, seed: Any, psi: Any, space: str,
                   progress: gr.Progress | None, lr: float | None = None) -> UIState:
        """A new session state on `ref`; raises UserError (and changes nothing) when refused."""
        if ui is not None:
            handlers.ensure_idle(ui, "change the model or latent")
        self.studio.load(ref, self._progress(progress, Path(ref.source).name))
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

    def _said(self, text: str, began: bool, *args: Any, **kwargs: Any) -> dict:
        """A page whose first model could not be loaded says why in its status line."""
        return {self.page.stats: text}

    @answer(said=_said)
    def init_session(self, model: str | None, seed: Any, psi: Any, space: str, lr: Any, max_steps: Any,
                     render_every: Any, mask_lambda: Any, progress: gr.Progress = gr.Progress()) -> dict:
        """Page load: build this browser session's state on the selected (or default) model."""
        page = self.page
        source = model or self.studio.default_model()
        if source is None:
            return {page.stats: self.studio.models_note()}
        config = handlers.make_config(lr, max_steps, mask_lambda, space)
        ref = self.studio.resolve(source)
        self.studio.load(ref, self._progress(progress, Path(ref.source).name))
        ui = handlers.make_state(ref, str(self.studio.device), seed, psi, space, config, render_every)
        return {**whole(page, ui), **self.preset_for(ui)}

    @answer()
    def change_model(self, ui: UIState | None, model: str | None, seed: Any, psi: Any, space: str,
                     progress: gr.Progress = gr.Progress()) -> dict:
        """Model picked: a new image, with the model's recommended step size."""
        if not model or (ui is not None and ui.photo is None and ui.model.source == model):
            return unchanged()
        ref = self.studio.resolve(model)
        lr = ref.lr
        new = self._new_state(ui, ref, seed, psi, space, progress, lr=lr)
        return {**self._replace(ui, new), self.page.lr: lr, **self.preset_for(new)}

    @answer("a model conversion")
    def load_own_model(self, ui: UIState | None, upload: str | None, hub_ref: str, seed: Any, psi: Any,
                       space: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None) -> dict:
        """'Your own model': an uploaded .pkl/.safetensors file, else a Hub `repo_id/filename`. Converting
        an upload is a job: one at a time per visitor."""
        from ...checkpoints.hub import parse_hub_ref

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
        new = self._new_state(ui, ModelRef(source=source, label=label), seed, psi, space, progress)
        return {**self._replace(ui, new), **self.preset_for(new)}

    @answer()
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
        to come makes the image (call with `ui.latest()` held). A photo session stays in W+ (`photo`'s rule):
        choosing W there flips the radio back. A new seed or ψ replaces the photo with a generated image of the
        model it was made from. A refused seed or ψ raises (the caller's `answer` says why)."""
        same_start = check_number("seed", seed) == ui.seed and check_number("psi", psi) == ui.psi
        if same_start and photo.keeps_photo_space(ui, space):
            gr.Warning(photo.PHOTO_SPACE_NOTE)
            return {self.page.space: photo.PHOTO_SPACE}
        if same_start and (space == ui.space or ui.photo is not None):
            return {}
        base = ui.photo.base if ui.photo is not None else ui.model
        new = self._new_state(ui, base, seed, psi, space, None)
        return self._replace(ui, new)

    @answer()
    def load_example(self, ui: UIState | None, example: Example, space: str,
                     progress: gr.Progress = gr.Progress()) -> dict:
        """An example button: its model at its seed and ψ with its points set, ready for Start."""
        p = self.page
        ref = self.studio.resolve(example.model)
        lr = ref.lr
        new = self._new_state(ui, ref, example.seed, example.psi, space, progress, lr=lr)
        handlers.check_points(example.handles, example.targets, new.height, new.width)
        new.snap = snapshots.set_points(new.snap, example.handles, example.targets)
        new.notice = f"Example “{example.label}”: press Start to drag the points."
        handlers.replace(ui, new)
        return {**whole(p, new), p.model: ref.source, p.seed: example.seed, p.psi: example.psi, p.lr: lr}

    @answer()
    def bundled(self) -> dict:
        """The "use the bundled model" button: pick it in the dropdown (whose change loads it)."""
        source = self.studio.bundled_model()
        return {self.page.model: source} if source else {}

    @staticmethod
    def random_seed() -> int:
        return int(np.random.randint(0, 2**31 - 1))

    @answer()
    def update_params(self, ui: UIState | None, lr: Any, max_steps: Any, render_every: Any,
                      mask_lambda: Any, tracker: str | None = None) -> dict:
        """A drag setting the visitor edited: the session's next drag uses it (nothing on the page changes)."""
        if ui is not None:
            handlers.update_params(ui, lr, max_steps, render_every, mask_lambda, tracker)
        return unchanged()

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        full = whole_outputs(p)
        preset = [p.preset, p.w_steps, p.wplus_steps, p.pti_steps]      # a new model: its photo preset
        settings = [p.lr, p.max_steps, p.render_every, p.mask_lambda]
        p.demo.load(self.init_session, [p.model, p.seed, p.psi, p.space, *settings], [*full, *preset], **heavy,
                    api_visibility="private")
        p.model.change(self.change_model, [p.state, p.model, p.seed, p.psi, p.space], [*full, p.lr, *preset],
                       **heavy, api_visibility="private")
        p.load_own.click(self.load_own_model, [p.state, p.upload, p.hub_ref, p.seed, p.psi, p.space],
                         [*full, *preset], **heavy, api_visibility="private")
        # Enter and blur both ask (`apply_latent` makes one image). The progress shows on the status line only:
        # an overlay on the image would swallow the click whose mouse-down blurred the seed box.
        gr.on([p.seed.submit, p.seed.blur, p.psi.release, p.space.change], self.change_latent,
              [p.state, p.seed, p.psi, p.space], [*full, p.space], show_progress_on=p.stats, **heavy)
        p.dice.click(self.random_seed, None, p.seed, **light).then(
            self.change_latent, [p.state, p.seed, p.psi, p.space], [*full, p.space], show_progress_on=p.stats, **heavy)
        # `input`, not `change`: only the visitor's edits; a value the server writes (a model's step size) is in
        # the state already and does not come back.
        gr.on([c.input for c in [*settings, p.tracker]], self.update_params, [p.state, *settings, p.tracker],
              p.stats, **light)
        p.use_bundled.click(self.bundled, None, p.model, **light)
        for example, button in p.example_buttons.items():
            button.click(lambda ui, space, progress=gr.Progress(), example=example:
                         self.load_example(ui, example, space, progress),
                         [p.state, p.space], [*full, p.model, p.seed, p.psi, p.lr], **heavy,
                         api_visibility="private")
