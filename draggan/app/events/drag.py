"""Drag panel: points, mask, Start/Stop, Undo/Redo/Reset."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from ...service import handlers
from ...service.state import UIState
from ...service.studio import Studio
from . import Page, answer, compare_value, editor_value, need, unchanged


def _same_masks(ui: UIState, fixed: np.ndarray | None, flexible: np.ndarray | None) -> bool:
    """Whether (fixed, flexible), None meaning empty, are the masks the state holds."""
    def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
        return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
    return same(fixed, ui.fixed_mask) and same(flexible, ui.flexible_mask)


class DragPanel:
    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio = studio
        self.page = page

    def _act(self, ui: UIState | None, action: Callable[[UIState], str], shown: Callable[[UIState], dict]) -> dict:
        """Run `action` (its sentence goes to the status line) and return `shown(ui)`."""
        ui = need(ui)
        ui.notice = action(ui)
        return shown(ui)

    def _points(self, ui: UIState | None, action: Callable[[UIState], str]) -> dict:
        return self._act(ui, action, lambda u: {self.page.image: handlers.view(u),
                                               self.page.stats: handlers.stats_text(u)})

    @answer()
    def click(self, ui: UIState | None, evt: gr.SelectData) -> dict:
        return self._points(ui, lambda u: handlers.add_point(u, evt.index))

    @answer()
    def remove_last(self, ui: UIState | None) -> dict:
        return self._points(ui, handlers.remove_last_point)

    @answer()
    def clear_points(self, ui: UIState | None) -> dict:
        return self._points(ui, handlers.clear_points)

    @answer()
    def toggle_mask(self, ui: UIState | None, show: bool) -> dict:
        if ui is None:
            return unchanged()
        ui.show_mask = bool(show)
        return {self.page.image: handlers.view(ui)}

    @answer()
    def paint_mask(self, ui: UIState | None, editor: Any) -> dict:
        """Read the painted masks into the state (the editor's `input`: each stroke, and each value the server
        sends it once loaded); an echo of the masks the state holds changes nothing and warns nobody."""
        p = self.page
        if ui is None:
            return unchanged()
        fixed, flexible = handlers.masks_from_editor(editor, ui.height, ui.width)
        if _same_masks(ui, fixed, flexible):
            return unchanged()
        handlers.ensure_idle(ui, "change the mask")
        handlers.set_masks(ui, fixed, flexible)
        return {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui)}

    @answer()
    def reset_mask(self, ui: UIState | None) -> dict:
        """Clear both masks; refused while a drag runs, as painting is (the drag keeps the mask it started
        with)."""
        p = self.page
        ui = need(ui)
        handlers.ensure_idle(ui, "reset the mask")
        handlers.reset_mask(ui)
        return {p.image: handlers.view(ui), p.editor: editor_value(ui), p.stats: handlers.stats_text(ui)}

    def _shown(self, ui: UIState, editor: bool = True) -> dict:
        """Everything a drag or a history step changes; the mask editor too unless `editor` is False."""
        p = self.page
        shown = {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui), p.compare: compare_value(ui),
                 p.progress: handlers.progress_html(ui)}
        return {**shown, p.editor: editor_value(ui)} if editor else shown

    @answer()
    def show_editor(self, ui: UIState | None) -> dict:
        """The mask editor's value once a drag has ended (see `wire`)."""
        return unchanged() if ui is None else {self.page.editor: editor_value(ui)}

    def _said(self, text: str, began: bool, ui: UIState | None, *args: Any, **kwargs: Any) -> dict | None:
        """A refused or failed drag: said in the status line too; the image it reached is kept."""
        if ui is None:
            return None
        ui.notice = text
        return self._shown(ui, editor=False)

    @answer("a drag", said=_said)
    def start(self, ui: UIState | None, request: gr.Request = None) -> Iterator[dict]:
        """Start (or resume) a drag and stream the image and stats until it ends or is stopped; one running
        job per visitor, held until the drag ends. A failed drag keeps its last image: the failure is said in
        the status line as well as in the toast."""
        p = self.page
        ui = need(ui)
        job = handlers.start_drag(ui)
        ui.notice = ""
        for update in handlers.follow(ui, job):
            if update.image is not None:
                yield {p.image: handlers.view(ui), p.stats: handlers.stats_text(ui),
                       p.progress: handlers.progress_html(ui)}
        yield self._shown(ui, editor=False)

    @answer()
    def stop(self, ui: UIState | None) -> dict:
        if ui is None:
            return unchanged()
        message = handlers.stop_drag(ui)
        if message.startswith("Nothing"):
            ui.notice = message
        return self._shown(ui, editor=False)

    def _history(self, ui: UIState | None, action: Callable[[UIState], str]) -> dict:
        return self._act(ui, action, self._shown)

    @answer()
    def undo(self, ui: UIState | None) -> dict:
        return self._history(ui, handlers.undo)

    @answer()
    def redo(self, ui: UIState | None) -> dict:
        return self._history(ui, handlers.redo)

    @answer()
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
        p.image.select(self.click, p.state, [p.image, p.stats], **light)
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
