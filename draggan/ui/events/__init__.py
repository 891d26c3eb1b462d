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
    """The mask editor's value: the plain image and, when a mask is painted, the masks as one layer.

    No layer is sent when there is no mask: Gradio's ImageEditor frontend adds a layer from a URL while the new
    background is still loading, and the background's canvas resize clears the layers' draw textures
    meanwhile, which logs "No draw texture found for layer" in the browser console and drops that layer
    (a race in its LayerManager.add_layer_from_url; reports of layers lost on value updates:
    gradio-app/gradio#7522, #7408). An empty layer list skips that path; the editor makes its own blank layer.
    """
    has_mask = ui.fixed_mask is not None or ui.flexible_mask is not None
    return {"background": handlers.plain_view(ui), "layers": [handlers.mask_layer(ui)] if has_mask else [],
            "composite": None}


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
