"""The app's event handlers, one module per panel: model, drag, photo, export and the headless API.

Each panel is a small class built from the shared `Studio` and the page's components (`Page`, a namespace
filled by `app.py`); its handlers take component values and return `{component: value}` dicts, so only what
changed is sent, with no positional tuples to keep in line. `wire()` connects a panel to its components.
Every handler is wrapped in `refusals.answer`, the page's one refusal path: a refused request (any
`DragGANError`) becomes a warning toast and leaves the page as it was; a bug, a short apology with an incident id.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ...service import handlers
from ...service.state import UIState
from ..refusals import answer, unchanged  # noqa: F401  (the panels' one refusal path)

Page = SimpleNamespace


def editor_value(ui: UIState) -> dict[str, Any]:
    """The mask editor's value: the plain image as its background and, only while a mask is painted, the
    masks as one layer. Before that the editor paints on the empty layer it makes itself.

    Why no layer without a mask (Gradio 6.31's ImageEditor, `templates/frontend/assets/Index-CsUOoOcz.js`,
    line 522): the editor mounts when the Mask tab is first opened, and as it turns ready both its mount code
    (`await ue(background); await de(layers)`) and its reactive effects (`ue(...)`, `de(layers)`) load the
    value it holds; each `de` calls `add_layers_from_url`, which deletes every layer and adds its own, so one
    `add_layer_from_url` finds its layer deleted and logs "No draw texture found for layer". Two loads of a
    background alone are harmless, and a mask exists only once the visitor painted in the editor (a new
    image, model, photo or recipe starts without one), so the editor is first shown without a layer. The same
    race follows two values with a layer sent within one load, which is why a drag's outputs leave the editor
    out (`DragPanel.wire`). The strokes are read from the editor's `input` event (`DragPanel.paint_mask`),
    not `change`: the editor drops its first `change`, which without a layer to load is the first stroke.
    Nearest upstream report: gradio-app/gradio#7522 (ImageEditor layers lost on value updates)."""
    masked = ui.fixed_mask is not None or ui.flexible_mask is not None
    return {"background": handlers.plain_view(ui), "layers": [handlers.mask_layer(ui)] if masked else [],
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
