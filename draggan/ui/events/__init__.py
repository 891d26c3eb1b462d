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
    """The mask editor's value: the plain image and the painted masks as one layer."""
    return {"background": handlers.plain_view(ui), "layers": [handlers.mask_layer(ui)], "composite": None}


def whole(page: Page, ui: UIState) -> dict[Any, Any]:
    """Every output of a session that changed wholesale (new image, model, photo or recipe)."""
    return {page.state: ui, page.image: handlers.view(ui), page.editor: editor_value(ui),
            page.stats: handlers.stats_text(ui)}


def need(ui: UIState | None) -> UIState:
    if ui is None:
        raise handlers.UserError("Load a model first (pick one, or upload your own).")
    return ui
