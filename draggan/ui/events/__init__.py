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
    """The mask editor's value: the plain image, and the painted masks as one layer only when there are any.

    Why no empty layer: Gradio 6's ImageEditor (gradio 6.31, `InteractiveImageEditor`) loads the value it holds
    when it first becomes visible twice at once, from its mount code (`await ue(background); await
    de(layers)`) and from its reactive effects that fire as the editor turns ready; two `add_layers_from_url`
    then run together, each deleting the other's layer while its image loads, and the browser console logs
    "No draw texture found for layer" (`LayerManager.add_layer_from_url`). With no layer in the value both
    calls return at once; the editor's own layer (its `layer_options`) takes the strokes, which
    `masks_from_editor` reads back. Once the editor is shown, a value with the mask layer loads once (one
    background load, then the layer, awaited) and shows the mask again after a drag. Related upstream reports:
    gradio-app/gradio#7522 (layers lost on value updates), #7408."""
    layers = [handlers.mask_layer(ui)] if ui.fixed_mask is not None or ui.flexible_mask is not None else []
    return {"background": handlers.plain_view(ui), "layers": layers, "composite": None}


def layer_value(ui: UIState) -> dict[str, Any]:
    """The mask editor's value that gives a shown editor its layer (the painted masks, or an empty one) and
    keeps the background it shows: no background load runs, so nothing can delete the layer while it loads."""
    return {"background": None, "layers": [handlers.mask_layer(ui)], "composite": None}


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
