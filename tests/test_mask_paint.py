"""The Mask tab's paint handler and the mask editor's values without a browser: strokes reach the state and the
drag, the editor's echo of the value the server sent changes nothing and warns nobody, a real stroke during a
drag is refused with a warning (so are Reset mask and Undo), and every answer names a component (Gradio
rejects an empty dict). The editor gets no mask layer until a mask exists, and a drag's outputs leave the
editor out (a `.then` sends it once): both keep its layer loads from overlapping (see
`draggan.app.events.editor_value`)."""

from __future__ import annotations

import gradio as gr
import numpy as np

from _app_server import app_panels, build_app
from draggan.service import handlers
from draggan.app.events import editor_value, unchanged
from draggan.service.gpu import StopFlag
from draggan.service.state import Job
from test_ui_handlers import G, click, new_state  # noqa: F401  (G: the shared generator fixture)


def _stroke(ui, rows: slice, cols: slice) -> dict:
    """The editor's value after a flexible-area stroke over the given display rows and columns, painted on the
    layer the editor holds: the mask layer it was sent, or its own empty one."""
    value = editor_value(ui)
    layer = (value["layers"][0] if value["layers"] else np.zeros_like(handlers.mask_layer(ui))).copy()
    layer[rows, cols] = (60, 200, 90, 255)
    return {**value, "layers": [layer]}


def test_paint_reaches_the_state_and_echoes_are_silent(monkeypatch, G, tmp_path):  # noqa: F811
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(msg))
    _, page, panels = app_panels(monkeypatch)
    drag = panels.drag
    assert drag.paint_mask(None, None) == unchanged(), "an answer for no session leaves the page as it was"

    ui = new_state(G)
    h, w = handlers.mask_layer(ui).shape[:2]
    out = drag.paint_mask(ui, _stroke(ui, slice(h // 4, h // 2), slice(w // 4, w // 2)))
    assert ui.flexible_mask is not None and ui.fixed_mask is None
    assert abs(ui.flexible_mask.mean() - 1 / 16) < 0.02
    assert "mask: flexible area 6%" in out[page.stats] and page.image in out
    painted = ui.flexible_mask.copy()

    ui.job = Job(kind="drag", stop=StopFlag(str(tmp_path / "stop")))        # a drag under way
    assert ui.running
    for refused in (drag.reset_mask, drag.undo):                            # a toast, and an answer Gradio takes
        out = refused(ui)
        assert out == unchanged() and np.array_equal(ui.flexible_mask, painted)
        assert "press Stop" in warnings.pop()
    out = drag.paint_mask(ui, editor_value(ui))                             # the echo of a drag update
    assert page.image not in out and not warnings and np.array_equal(ui.flexible_mask, painted)
    out = drag.paint_mask(ui, _stroke(ui, slice(0, h // 8), slice(0, w // 8)))
    assert page.image not in out and np.array_equal(ui.flexible_mask, painted)
    assert warnings and "press Stop" in warnings[0]


def test_the_editor_gets_a_layer_only_once_a_mask_exists(monkeypatch, G):  # noqa: F811
    """A new session's editor value has the image and no layer (the editor's first showing loads no layer);
    once painted, the value carries the mask as a layer that reads back as the painted mask; Reset mask and a
    new image drop it again."""
    _, page, panels = app_panels(monkeypatch)
    drag = panels.drag
    ui = new_state(G)
    value = editor_value(ui)
    assert value["layers"] == [] and value["background"].shape == handlers.mask_layer(ui).shape[:2] + (3,)
    h, w = value["background"].shape[:2]
    drag.paint_mask(ui, _stroke(ui, slice(h // 4, h // 2), slice(w // 4, w // 2)))
    painted = ui.flexible_mask.copy()
    layers = editor_value(ui)["layers"]
    assert len(layers) == 1
    assert np.array_equal(handlers.masks_from_editor({"layers": layers}, ui.height, ui.width)[1], painted)

    out = drag.reset_mask(ui)
    assert out[page.editor]["layers"] == [] and ui.flexible_mask is None
    drag.paint_mask(ui, _stroke(ui, slice(0, h // 2), slice(0, w // 2)))
    assert ui.flexible_mask is not None
    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    fresh = next(panels.model.change_latent(ui, 1, 0.7, "w+"))
    assert fresh[page.editor]["layers"] == [], "a new image starts without a mask, so without a layer"


def test_a_painted_mask_is_used_by_the_drag_and_the_editor_gets_one_value_after_it(monkeypatch, G):  # noqa: F811
    """Paint, drag: the drag's history entry holds the painted area as its mask (everything else fixed); the
    drag's streamed outputs and Stop's answer leave the editor out, and the `.then` after Start sends it."""
    demo = build_app(monkeypatch)
    page, drag = demo.page, demo.panels.drag
    ui = new_state(G, max_steps=2)
    h, w = handlers.mask_layer(ui).shape[:2]
    drag.paint_mask(ui, _stroke(ui, slice(0, h // 2), slice(0, w // 2)))
    click(ui, 20, 20)
    click(ui, 24, 22)
    outs = list(drag.start(ui))
    assert outs and all(page.editor not in out for out in outs)
    assert ui.snap.drags(), "the drag ran"
    used = ui.snap.drags()[-1].mask
    assert used is not None and np.array_equal(used.astype(bool), ~ui.flexible_mask)
    assert page.editor not in drag.stop(ui)
    sent = drag.show_editor(ui)[page.editor]
    assert np.array_equal(handlers.masks_from_editor(sent, ui.height, ui.width)[1], ui.flexible_mask)

    start_fns = [fn for fn in demo.fns.values() if getattr(fn.fn, "__func__", None) is type(drag).start]
    assert len(start_fns) == 1 and page.editor not in start_fns[0].outputs
    then = [fn for fn in demo.fns.values() if getattr(fn.fn, "__func__", None) is type(drag).show_editor]
    assert len(then) == 1 and then[0].outputs == [page.editor]
    stop_fn = [fn for fn in demo.fns.values() if getattr(fn.fn, "__func__", None) is type(drag).stop]
    assert len(stop_fn) == 1 and page.editor not in stop_fn[0].outputs
