"""The app's event handlers, one module per panel: model, drag, photo, export and the headless API.

Each panel is a small class built from the shared `Studio` and the page's components (`Page`, a namespace
filled by `app.py`); its handlers take component values and return `{component: value}` dicts, so only what
changed is sent, with no positional tuples to keep in line. `wire()` connects a panel to its components.
A refused request (`UserError`) becomes a warning toast and leaves the page as it was.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .. import handlers
from ..state import UIState

Page = SimpleNamespace


def editor_value(ui: UIState) -> dict[str, Any]:
    """The mask editor's value: the plain image and the painted masks as one layer (always sent: an editor
    shown with a value without a layer has no layer to paint on, and the strokes never reach the server).

    Known upstream race (gradio 6.31, templates/frontend/assets/Index-CsUOoOcz.js, line 522): when the editor
    is first shown (the Mask tab's first opening) with a value that has a layer, its mount code loads the value
    (col 102380: `await ue(background); await de(layers)`) while the reactive effects that fire as it turns
    ready load it again (col 105088); the two `add_layers_from_url` (col 38387) each delete the layers, so one
    `add_layer_from_url` finds its layer gone and logs "No draw texture found for layer" (col 17938); the other
    load wins and painting works. Later values reach a shown editor once and load cleanly. Tried, all worse:
    no layer until a mask exists (strokes are lost: the editor then has no layer), the layer in a second value
    sent on the editor's first `change` (the same error: the mount code is still running and, stack traces
    show, its `de` and the effect's `de` both call `add_layers_from_url`), that second value without a
    background (a blank canvas), the tab's children rendered up front (`render_children=True`: the editor
    still starts on first show).
    Related upstream reports: gradio-app/gradio#7522 (layers lost on value updates), #7408."""
    return {"background": handlers.plain_view(ui), "layers": [handlers.mask_layer(ui)], "composite": None}


def compare_value(ui: UIState) -> tuple[Any, Any]:
    """The before / after pair: the start image and the current result, at display size."""
    return handlers.plain_view(ui, ui.start_image), handlers.plain_view(ui)


def whole_outputs(page: Page) -> list[Any]:
    """The components `whole` fills."""
    return [page.state, page.image, page.editor, page.stats, page.compare, page.progress, page.ai_mark]


def whole(page: Page, ui: UIState) -> dict[Any, Any]:
    """Every output of a session that changed wholesale (new image, model, photo or recipe); the visible
    "AI Generated" mark starts on for an edited photo, off for a generated image."""
    return {page.state: ui, page.image: handlers.view(ui), page.editor: editor_value(ui),
            page.stats: handlers.stats_text(ui), page.compare: compare_value(ui), page.progress: "",
            page.ai_mark: ui.photo is not None}


def need(ui: UIState | None) -> UIState:
    if ui is None:
        raise handlers.UserError("Load a model first (pick one, or upload your own).")
    return ui
