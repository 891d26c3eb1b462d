"""Drag panel: points, mask, Start/Stop, Undo/Redo/Reset."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np

from ...service import handlers
from ...engine import DragConfig, methods
from ...limits import LIMITS
from ...service.drawing import DISPLAY_MIN_SIZE, FIXED_TINT, FLEXIBLE_TINT
from ...service.state import DEFAULT_RENDER_EVERY, UIState
from .. import served
from ...service.studio import Studio
from . import Page, answer, compare_value, editor_value, need, unchanged, whole, whole_outputs


IMAGE_HEIGHT = 512
FLEX_HEX = "#{:02x}{:02x}{:02x}".format(*FLEXIBLE_TINT)
FIXED_HEX = "#{:02x}{:02x}{:02x}".format(*FIXED_TINT)
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

    def controls(self) -> None:
        """The "Drag settings" section: step size (the start model's recommended one), mask λ, steps, method,
        display interval; each field's bounds are the limits table's."""
        p, studio = self.page, self.studio
        default = studio.default_model()
        with gr.Accordion("Drag settings", open=False):
            with gr.Row():
                p.lr = gr.Number(studio.drag_lr(default), label="Step size (lr)", **LIMITS.lr.field())
                p.mask_lambda = gr.Number(DragConfig.mask_lambda, label="Mask λ", **LIMITS.mask_lambda.field())
            p.max_steps = gr.Slider(value=DragConfig.max_steps, label="Max steps per drag",
                                    **LIMITS.max_steps.field())
            p.tracker = gr.Dropdown(methods.choices(), value=DragConfig.tracker, label="Drag method",
                                    info=" ".join(m.help for m in methods.METHODS.values()))
            p.render_every = gr.Slider(value=DEFAULT_RENDER_EVERY, **LIMITS.render_every.field(),
                                       label="Display interval: 0 = by time (a fresh view about every 2 s, "
                                             "a cheap preview while dragging); k = every k steps")

    def workspace(self) -> None:
        """The workspace: the Start / Stop / Undo / Redo / Reset toolbar, the Points, Mask and Before / after tabs,
        and below them the status line and progress."""
        p = self.page
        with gr.Row(elem_id="toolbar"):
            p.start = gr.Button("▶ Start", variant="primary")
            p.stop = gr.Button("■ Stop", variant="stop")
            p.undo = gr.Button("↶ Undo")
            p.redo = gr.Button("↷ Redo")
            p.reset = gr.Button("⟲ Reset")
        with gr.Tabs():
            with gr.Tab("Points"):
                p.image = served.Image(label="Click: handle, then target", type="pil", interactive=False,
                                   elem_id="canvas", buttons=["fullscreen"], show_label=False)
                with gr.Row(elem_classes="compact-row"):
                    p.remove_last = gr.Button("Remove last point", size="sm")
                    p.clear = gr.Button("Clear points", size="sm")
                    p.show_mask = gr.Checkbox(True, label="Show mask", min_width=80)
            with gr.Tab("Mask"):
                p.editor = served.ImageEditor(
                    type="numpy", image_mode="RGBA", sources=[], transforms=[], layers=False,
                    brush=gr.Brush(colors=[FLEX_HEX, FIXED_HEX], default_color=FLEX_HEX,
                                   color_mode="fixed", default_size=24),
                    eraser=gr.Eraser(default_size=24), show_label=False, elem_id="mask-editor",
                    height=IMAGE_HEIGHT + 60, canvas_size=(DISPLAY_MIN_SIZE, DISPLAY_MIN_SIZE))
                with gr.Row():
                    gr.Markdown(f"<span style='color:{FLEX_HEX}'>■</span> flexible area (may change; "
                                f"everything else stays) &nbsp; <span style='color:{FIXED_HEX}'>■</span> "
                                "fixed area (must not change)")
                    p.reset_mask = gr.Button("Reset mask", size="sm", scale=0)
            with gr.Tab("Before / after"):
                p.compare = served.ImageSlider(label="Start image · result", type="numpy", interactive=False,
                                           elem_id="compare", max_height=IMAGE_HEIGHT, buttons=[])
        # Below the image: the status lines grow during a drag and must not push it off the first screen.
        p.stats = gr.Markdown(elem_id="stats")
        p.progress = gr.HTML(elem_id="drag-progress")

    def _act(self, ui: UIState | None, action: Callable[[UIState], str], shown: Callable[[UIState], dict]) -> dict:
        """Run `action` (its sentence goes to the status line) and return `shown(ui)`."""
        ui = need(ui)
        ui.notice = action(ui)
        return shown(ui)

    def _points(self, ui: UIState | None, action: Callable[[UIState], str]) -> dict:
        return self._act(ui, action, lambda u: {self.page.image: handlers.view(u),
                                               self.page.stats: handlers.stats_text(u)})

    def _click_said(self, text: str, began: bool, ui: UIState | None, *args: Any, **kwargs: Any) -> dict | None:
        """A refused click: the page shows the session as it now is (a seed applied first made a new image)."""
        if ui is None:
            return None
        with ui.latest() as now:
            return None if now is ui else {**whole(self.page, now), self.page.space: now.space}

    @answer(said=_click_said)
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
            ui.notice = handlers.add_point(ui, evt.index)
            out = {**shown, p.image: handlers.view(ui), p.stats: handlers.stats_text(ui)}
        if ui.view_sent is not None:               # a new image another event made: answer after it was sent
            ui.view_sent.wait(timeout=VIEW_WAIT_S)
        return out

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
