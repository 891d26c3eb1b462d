"""Drag panel: points, mask, Start/Stop, Undo/Redo/Reset."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from ...service import handlers
from ...service.handlers import UserError
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, compare_value, editor_value, need, unchanged, whole_outputs


VIEW_WAIT_S = 10.0   # longest a click waits for the new image it landed on to be sent (a closed page never is)


def _same_masks(ui: UIState, fixed: np.ndarray | None, flexible: np.ndarray | None) -> bool:
    """Whether (fixed, flexible), None meaning empty, are the masks the state holds."""
    def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
    return same(fixed, ui.fixed_mask) and same(flexible, ui.flexible_mask)


class DragPanel:
    def __init__(self, studio: Studio, page: Page,
                 apply_latent: Callable[[UIState, Any, Any, str], dict] | None = None) -> None:
        self.studio = studio
        self.page = page
        self.apply_latent = apply_latent     # ModelPanel.apply_latent: a seed typed but not yet applied

    def _act(self, ui: UIState | None, action: Callable[[UIState], str], shown: Callable[[UIState], dict]) -> dict:
        """Run `action` (its sentence goes to the status line) and return `shown(ui)`; a refusal is a toast."""
        try:
            ui = need(ui)
            ui.notice = action(ui)
        except UserError as exc:
            gr.Warning(str(exc), duration=5)
            return unchanged()
        return shown(ui)

    def _points(self, ui: UIState | None, action: Callable[[UIState], str]) -> dict:
        return self._act(ui, action, lambda u: {self.page.image: handlers.view(u),
                                               self.page.stats: handlers.stats_text(u)})

    def click(self, ui: UIState | None, seed: Any, psi: Any, space: str, evt: gr.SelectData) -> dict:
        """A click on the image: a handle, or the target of the last one. A seed, ψ or space on the page that is
        not yet the image's (typed, then the image clicked: the seed box's blur races this click) is applied
        first, so the point lands on the new image; whichever of the two events comes second finds the new
        image there and makes none (`UIState.latest`)."""
        p = self.page
        if ui is None or self.apply_latent is None:
            return self._points(ui, lambda u: handlers.add_point(u, evt.index))
        with ui.latest() as ui:
            shown = self.apply_latent(ui, seed, psi, space)
            ui = shown.get(p.state, ui)
            try:
                ui.notice = handlers.add_point(ui, evt.index)
            except UserError as exc:
                gr.Warning(str(exc), duration=5)
                return shown or unchanged()
            out = {**shown, p.image: handlers.view(ui), p.stats: handlers.stats_text(ui)}
        if ui.view_sent is not None:               # a new image another event made: answer after it was sent
            ui.view_sent.wait(timeout=VIEW_WAIT_S)
        return out

    def remove_last(self, ui: UIState | None) -> dict:
        return self._points(ui, handlers.remove_last_point)

    def clear_points(self, ui: UIState | None) -> dict:
        return self._points(ui, handlers.clear_points)

    def toggle_mask(self, ui: UIState | None, show: bool) -> dict:
        if ui is None:
            return unchanged()
        ui.show_mask = bool(show)
        return {self.page.image: handlers.view(ui)}

    def paint_mask(self, ui: UIState | None, editor: Any) -> dict:
        """Read the painted masks into the state (the editor's `input`: each stroke, and each value the server
        sends it once loaded); an echo of the masks the state holds changes nothing and warns nobody."""
        p = self.page
        if ui is None:
            return unchanged()
        try:
            fixed, flexible = handlers.masks_from_editor(editor, ui.height, ui.width)
            if _same_masks(ui, fixed, flexible):
                return unchanged()
            handlers.ensure_idle(ui, "change the mask")
            handlers.set_masks(ui, fixed, flexible)
        except UserError as exc:
            gr.Warning(str(exc))
            return unchanged()
        return {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui)}

    def reset_mask(self, ui: UIState | None) -> dict:
        """Clear both masks; refused while a drag runs, as painting is (the drag keeps the mask it started
        with)."""
        p = self.page
        try:
            ui = need(ui)
            handlers.ensure_idle(ui, "reset the mask")
        except UserError as exc:
            gr.Warning(str(exc), duration=5)
            return unchanged()
        handlers.reset_mask(ui)
        return {p.image: handlers.view(ui), p.editor: editor_value(ui), p.stats: handlers.stats_text(ui)}

    def _shown(self, ui: UIState, editor: bool = True) -> dict:
        """Everything a drag or a history step changes; the mask editor too unless `editor` is False."""
        p = self.page
        shown = {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui), p.compare: compare_value(ui),
                 p.progress: handlers.progress_html(ui)}
        return {**shown, p.editor: editor_value(ui)} if editor else shown

    def show_editor(self, ui: UIState | None) -> dict:
        """The mask editor's value once a drag has ended (see `wire`)."""
        return unchanged() if ui is None else {self.page.editor: editor_value(ui)}

    def start(self, ui: UIState | None, request: gr.Request = None) -> Iterator[dict]:
        """Start (or resume) a drag and stream the image and stats until it ends or is stopped; one running
        job per visitor (`Studio.visitors`), held until the drag ends."""
        try:
            ui = need(ui)
            slot = self.studio.visitors.claim(request, "a drag")
        except UserError as exc:
            gr.Warning(str(exc))
            return
        with slot:
            yield from self._run(ui)

    def _run(self, ui: UIState) -> Iterator[dict]:
        p = self.page
        try:
            job = handlers.start_drag(ui)
        except UserError as exc:
            if ui is None:
                gr.Warning(str(exc), duration=5)
                return
            ui.notice = str(exc)                       # said in the status line, not in a toast
            yield {p.stats: handlers.stats_text(ui)}
            return
        ui.notice = ""
        try:
            for update in handlers.follow(ui, job):
                if update.image is not None:
                    yield {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui),
                           p.progress: handlers.progress_html(ui)}
        except UserError as exc:
            ui.notice = str(exc)
            gr.Warning(str(exc))
        yield self._shown(ui, editor=False)

    def stop(self, ui: UIState | None) -> dict:
        if ui is None:
            return unchanged()
        message = handlers.stop_drag(ui)
        if message.startswith("Nothing"):
            ui.notice = message
        return self._shown(ui, editor=False)

    def _history(self, ui: UIState | None, action: Callable[[UIState], str]) -> dict:
        return self._act(ui, action, self._shown)

    def undo(self, ui: UIState | None) -> dict:
        return self._history(ui, handlers.undo)

    def redo(self, ui: UIState | None) -> dict:
        return self._history(ui, handlers.redo)

    def reset_image(self, ui: UIState | None) -> dict:
        return self._history(ui, handlers.reset_image)

    def wire(self, heavy: dict, light: dict) -> None:
        p = self.page
        shown = [p.image, p.stats, p.editor, p.compare, p.progress]
        # A drag's outputs leave the mask editor out: Gradio applies a generator's last output twice (its last
        # `process_generating` and its `process_completed` message both carry it), and Stop answers while the
        # drag's own end is on its way; values that close together load their mask layers at the same time
        # (see `editor_value`). The editor gets its value once, after the drag.
        dragged = [p.image, p.stats, p.compare, p.progress]
        # The click reads the latent's inputs too and may answer with a new image (see `click`).
        p.image.select(self.click, [p.state, p.seed, p.psi, p.space], [*whole_outputs(p), p.space], **light)
        p.remove_last.click(self.remove_last, p.state, [p.image, p.stats], **light)
        p.clear.click(self.clear_points, p.state, [p.image, p.stats], **light)
        p.show_mask.change(self.toggle_mask, [p.state, p.show_mask], p.image, **light)
        p.editor.input(self.paint_mask, [p.state, p.editor], [p.image, p.stats], trigger_mode="always_last",
                       **light)
        p.reset_mask.click(self.reset_mask, p.state, shown, **light)
        p.start.click(self.start, p.state, dragged, **heavy, api_visibility="private").then(
            self.show_editor, p.state, p.editor, **light)
        p.stop.click(self.stop, p.state, dragged, **light)
        p.undo.click(self.undo, p.state, shown, **heavy)
        p.redo.click(self.redo, p.state, shown, **heavy)
        p.reset.click(self.reset_image, p.state, shown, **light)
