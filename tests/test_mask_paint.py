"""The Mask tab's paint handler without a browser: strokes reach the state, the editor's echo of the value the
server sent changes nothing and warns nobody (it arrives after every drag update), a real stroke during a drag
is refused with a warning, and every answer names a component (Gradio rejects an empty dict)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from _app_server import app_panels
from draggan.ui.events import editor_value
from draggan.ui.gpu import StopFlag
from draggan.ui.state import Job
from test_ui_handlers import G, new_state  # noqa: F401  (G: the shared generator fixture)


def _stroke(ui, rows: slice, cols: slice) -> dict:
    """The editor's value after a flexible-area stroke over the given display rows and columns."""
    value = editor_value(ui)
    layer = value["layers"][0].copy()
    layer[rows, cols] = (60, 200, 90, 255)
    return {**value, "layers": [layer]}


def test_paint_reaches_the_state_and_echoes_are_silent(monkeypatch, G, tmp_path):  # noqa: F811
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(msg))
    _, page, panels = app_panels(monkeypatch)
    drag = panels.drag
    assert page.stats in drag.paint_mask(None, None), "an answer for no session still names a component"

    ui = new_state(G)
    h, w = editor_value(ui)["layers"][0].shape[:2]
    out = drag.paint_mask(ui, _stroke(ui, slice(h // 4, h // 2), slice(w // 4, w // 2)))
    assert ui.flexible_mask is not None and ui.fixed_mask is None
    assert abs(ui.flexible_mask.mean() - 1 / 16) < 0.02
    assert "mask: flexible area 6%" in out[page.stats] and page.image in out
    painted = ui.flexible_mask.copy()

    ui.job = Job(kind="drag", stop=StopFlag(str(tmp_path / "stop")))        # a drag under way
    assert ui.running
    out = drag.paint_mask(ui, editor_value(ui))                             # the echo of a drag update
    assert page.image not in out and not warnings and np.array_equal(ui.flexible_mask, painted)
    out = drag.paint_mask(ui, _stroke(ui, slice(0, h // 8), slice(0, w // 8)))
    assert page.image not in out and np.array_equal(ui.flexible_mask, painted)
    assert warnings and "press Stop" in warnings[0]
