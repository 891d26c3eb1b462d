"""Photo panel: upload, crop preview, inversion (streamed), Cancel."""

from __future__ import annotations

import html
from typing import Any, Iterator

import gradio as gr

from ...service import gpu, handlers, photo
from ...server import owned_files
from ...service.handlers import UserError
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, need, unchanged, whole, whole_outputs


def _status(text: str, extra_html: str = "") -> str:
    return f"<div class='inv-status'>{html.escape(text)}{extra_html}</div>"


class PhotoPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def preset(self, name: str) -> dict:
        """Inversion preset → the W, W+ and PTI step fields."""
        p = self.page
        try:
            w, wp, pti = photo.preset_steps(name)
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        return {p.w_steps: w, p.wplus_steps: wp, p.pti_steps: pti}

    def default_preset(self) -> str:
        return photo.default_preset(self.studio.device.type)

    def estimate_text(self, w_steps: Any, wplus_steps: Any, pti_steps: Any, ui: UIState | None = None) -> str | None:
        """The device and, once an inversion ran on this model here, the expected duration (None: bad steps)."""
        try:
            total = sum(int(v) for v in (w_steps, wplus_steps, pti_steps))
        except (TypeError, ValueError):
            return None
        rate = None
        if ui is not None:
            rate = self.studio.step_seconds.get((ui.base_model.source, str(self.studio.device)))
        return photo.estimate_text(str(self.studio.device), total, rate)

    def estimate(self, w_steps: Any, wplus_steps: Any, pti_steps: Any, ui: UIState | None = None) -> dict:
        text = self.estimate_text(w_steps, wplus_steps, pti_steps, ui)
        return unchanged() if text is None else {self.page.estimate: text}

    def prepare_photo(self, ui: UIState | None, file: str | None, face_align: bool) -> dict:
        """Upload (or the face-align box): check the photo and show the crop the model will be fitted to."""
        if not file:
            return unchanged()
        try:
            ui = need(ui)
            owned_files.claim(ui, file)           # the upload is deleted with the session (owned_files.py)
            G = gpu.generator(ui.base_model, ui.device)
            target, message = photo.prepare_photo(G, file, bool(face_align))
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        return {self.page.photo_view: photo.comparison(target, None),
                self.page.photo_status: _status(message, " Press <b>Invert photo</b> to fit the model to it.")}

    def invert_photo(self, ui: UIState | None, file: str | None, face_align: bool, w_steps: Any,
                     wplus_steps: Any, pti_steps: Any, preset: str | None = None,
                     request: gr.Request = None) -> Iterator[dict]:
        """Invert the uploaded photo and stream progress; when it succeeds the session drags the inverted
        latent on its own tuned generator. One running job per visitor (`Studio.visitors`)."""
        try:
            slot = self.studio.visitors.claim(request, "a photo inversion")
        except UserError as exc:
            gr.Warning(str(exc))
            return
        with slot:
            yield from self._invert(ui, file, face_align, w_steps, wplus_steps, pti_steps, preset)

    def _invert(self, ui: UIState | None, file: str | None, face_align: bool, w_steps: Any, wplus_steps: Any,
                pti_steps: Any, preset: str | None) -> Iterator[dict]:
        p = self.page
        try:
            ui = need(ui)
            if file:
                owned_files.claim(ui, file)
            job = photo.start_inversion(ui, file, w_steps, wplus_steps, pti_steps, face_align=bool(face_align),
                                        name=photo.photo_name(file) if file else None, preset=preset)
        except UserError as exc:
            gr.Warning(str(exc))
            return
        base = ui.base_model
        yield {p.stats: handlers.stats_text(ui), p.photo_view: photo.comparison(job.target, None),
               p.photo_status: photo.progress_html(job)}
        try:
            for preview, status in photo.follow_inversion(ui, job):
                out = {p.stats: handlers.stats_text(ui), p.photo_status: status}
                if preview is not None:
                    out[p.photo_view] = photo.comparison(job.target, preview)
                yield out
        except UserError as exc:
            gr.Warning(str(exc))
            yield {p.stats: handlers.stats_text(ui), p.photo_status: _status(str(exc))}
            return
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
