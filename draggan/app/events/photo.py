"""Photo panel: upload, crop preview, inversion (streamed), Cancel."""

from __future__ import annotations

import html
from typing import Any, Iterator

import gradio as gr

from ...inversion import face_alignment_available
from ...inversion.presets import PRESETS
from ...limits import LIMITS, number_or_none
from .. import served
from ...service import handlers, photo
from ...server import owned_files
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, answer, need, unchanged, whole, whole_outputs


def _status(text: str, extra_html: str = "") -> str:
    return f"<div class='inv-status'>{html.escape(text)}{extra_html}</div>"


class PhotoPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def controls(self) -> None:
        """The "Edit your own photo" section: upload, crop preview, inversion preset and steps, Invert / Cancel."""
        p = self.page
        with gr.Accordion("Edit your own photo", open=False, elem_id="photo-panel"):
            p.photo_file = gr.File(label="Upload a photo (PNG, JPEG, WebP)", file_types=["image"],
                                   height=110, elem_id="photo-upload")
            p.face_align = gr.Checkbox(False, label="Align face (FFHQ-style crop, for face models)",
                                       visible=face_alignment_available())
            p.photo_view = served.Image(label="Your photo · the model's reconstruction", type="numpy",
                                    interactive=False, elem_id="photo-view", buttons=[])
            with gr.Accordion("Inversion steps", open=False):
                preset = self.default_preset(self.studio.resolution_of(self.studio.default_model()))
                p.preset = gr.Radio(list(PRESETS), value=preset, label="Preset")
                first = PRESETS[preset].steps
                with gr.Row():
                    steps = LIMITS.inversion_steps.field()
                    p.w_steps = gr.Number(first[0], label="W steps", precision=0, **steps)
                    p.wplus_steps = gr.Number(first[1], label="W+ steps", precision=0, **steps)
                    p.pti_steps = gr.Number(first[2], label="PTI steps", precision=0, **steps)
            p.estimate = gr.Markdown(self.estimate_text(*first))
            with gr.Row(elem_classes="compact-row"):
                p.invert = gr.Button("Invert photo", variant="primary")
                p.cancel = gr.Button("Cancel", variant="stop")
            p.photo_status = gr.HTML(elem_id="photo-status")

    @answer()
    def preset(self, name: str) -> dict:
        """Inversion preset → the W, W+ and PTI step fields."""
        p = self.page
        w, wp, pti = photo.preset_steps(name)
        return {p.w_steps: w, p.wplus_steps: wp, p.pti_steps: pti}

    def default_preset(self, resolution: int) -> str:
        return photo.default_preset(self.studio.device.type, resolution)

    def preset_for(self, ui: UIState) -> dict:
        """The preset and step fields at the default for the session's model (on a new model)."""
        p = self.page
        name = self.default_preset(max(ui.height, ui.width))
        return {p.preset: name, **self.preset(name)}

    def estimate_text(self, w_steps: Any, wplus_steps: Any, pti_steps: Any, ui: UIState | None = None) -> str | None:
        """The device and, once an inversion ran on this model here, the expected duration (None: bad steps)."""
        steps = [number_or_none("inversion_steps", v) for v in (w_steps, wplus_steps, pti_steps)]
        if None in steps:
            return None
        total = sum(steps)
        rate = None
        if ui is not None:
            rate = self.studio.step_seconds.get((ui.base_model.source, str(self.studio.device)))
        return photo.estimate_text(str(self.studio.device), total, rate)

    @answer()
    def estimate(self, w_steps: Any, wplus_steps: Any, pti_steps: Any, ui: UIState | None = None) -> dict:
        text = self.estimate_text(w_steps, wplus_steps, pti_steps, ui)
        return unchanged() if text is None else {self.page.estimate: text}

    @answer()
    def prepare_photo(self, ui: UIState | None, file: str | None, face_align: bool) -> dict:
        """Upload (or the face-align box): check the photo and show the crop the model will be fitted to."""
        if not file:
            return unchanged()
        ui = need(ui)
        owned_files.claim(ui, file)           # the upload is deleted with the session (owned_files.py)
        target, message = photo.prepare_upload(ui, file, bool(face_align))
        return {self.page.photo_view: photo.comparison(target, None),
                self.page.photo_status: _status(message, " Press <b>Invert photo</b> to fit the model to it.")}

    def _said(self, text: str, began: bool, ui: UIState | None, *args: Any, **kwargs: Any) -> dict | None:
        """An inversion that failed once started: said on the photo's status line too (a refused start only
        in the toast)."""
        if not began or ui is None:
            return None
        return {self.page.stats: handlers.stats_text(ui), self.page.photo_status: _status(text)}

    @answer("a photo inversion", said=_said)
    def invert_photo(self, ui: UIState | None, file: str | None, face_align: bool, w_steps: Any,
                     wplus_steps: Any, pti_steps: Any, preset: str | None = None,
                     request: gr.Request = None) -> Iterator[dict]:
        """Invert the uploaded photo and stream progress; when it succeeds the session drags the inverted
        latent on its own tuned generator. One running job per visitor."""
        p = self.page
        ui = need(ui)
        if file:
            owned_files.claim(ui, file)
        job = photo.start_inversion(ui, file, w_steps, wplus_steps, pti_steps, face_align=bool(face_align),
                                    name=photo.photo_name(file) if file else None, preset=preset)
        base = ui.base_model
        yield {p.stats: handlers.stats_text(ui), p.photo_view: photo.comparison(job.target, None),
               p.photo_status: photo.progress_html(job)}
        for preview, status in photo.follow_inversion(ui, job):
            out = {p.stats: handlers.stats_text(ui), p.photo_status: status}
            if preview is not None:
                out[p.photo_view] = photo.comparison(job.target, preview)
            yield out
        rate = job.seconds_per_step()
        if rate is not None:
            self.studio.step_seconds[(base.source, str(self.studio.device))] = rate
        if job.result is None:
            yield {p.stats: handlers.stats_text(ui), p.photo_view: photo.comparison(job.target, None),
                   p.photo_status: _status(photo.outcome(job))}
            return
        ui.notice = "Photo inverted: drag it as usual (on your session's own tuned copy of the model)."
        yield {**whole(p, ui), p.photo_view: photo.comparison(ui.photo.target, ui.start_image),
               p.photo_status: photo.quality_html(ui.photo), p.space: ui.space}

    @answer()
    def cancel_photo(self, ui: UIState | None) -> dict:
        """Cancel a running inversion; the session keeps its image."""
        if ui is None:
            return unchanged()
        message = photo.cancel_inversion(ui)       # said where the inversion's progress was
        return {self.page.stats: handlers.stats_text(ui), self.page.photo_status: _status(message)}

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        steps = [p.w_steps, p.wplus_steps, p.pti_steps]
        full = whole_outputs(p)
        p.photo_file.upload(self.prepare_photo, [p.state, p.photo_file, p.face_align], [p.photo_view, p.photo_status],
                            **light)
        p.face_align.input(self.prepare_photo, [p.state, p.photo_file, p.face_align], [p.photo_view, p.photo_status],
                           **light)
        p.preset.input(self.preset, p.preset, steps, **light)
        gr.on([c.change for c in steps], self.estimate, [*steps, p.state], p.estimate, **light)
        p.invert.click(self.invert_photo, [p.state, p.photo_file, p.face_align, *steps, p.preset],
                       [*full, p.photo_view, p.photo_status, p.space], show_progress="minimal",
                       show_progress_on=p.photo_status, **heavy,
                       api_visibility="private").then(self.estimate, [*steps, p.state], p.estimate, **light)
        p.cancel.click(self.cancel_photo, p.state, [p.stats, p.photo_status], **light)
