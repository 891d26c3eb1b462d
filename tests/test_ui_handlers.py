"""Editor handlers on the tiny StyleGAN2 fixture: points, masks, bad input, stop/resume, undo, isolation."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from _app_server import app_panels, build_app
from _plain_gpu import PLAIN
from draggan import settings
from draggan.engine import snapshot as snapshots
from draggan.service import gpu, handlers
from draggan.service.drawing import display_scale, from_display, render_overlay, to_display
from draggan.app.events import unchanged
from draggan.service.models import ModelRef
from draggan.service.handlers import UserError
from draggan.service.models import GeneratorCache, check_upload, extra_model_choices, shared_cache

DATA = Path(__file__).parent / "data"
SG2 = DATA / "stylegan2-tiny-64.pkl"
REF = ModelRef(str(SG2), "tiny")


@pytest.fixture()
def G() -> torch.nn.Module:
    """The process-wide shared copy that the handlers drag on."""
    return shared_cache().get(str(SG2), torch.device("cpu"))


def new_state(G, seed=0, max_steps=4, **kw):
    config = handlers.make_config(lr=kw.get("lr", 2e-3), max_steps=max_steps, mask_lambda=kw.get("mask_lambda", 20.0),
                                  space=kw.get("space", "w+"))
    return handlers.make_state(REF, "cpu", seed, 0.7, kw.get("space", "w+"), config, kw.get("render_every", 2))


def ws(ui) -> torch.Tensor:
    return torch.from_numpy(snapshots.full_latent(ui.snap))


def render(ui) -> np.ndarray:
    return PLAIN["render"](ui.model, "cpu", ui.snap)


def in_background(ui):
    """Start a drag and follow it in a thread, as the Start event does; returns (job, thread)."""
    job = handlers.start_drag(ui)
    thread = threading.Thread(target=lambda: [None for _ in handlers.follow(ui, job)], daemon=True)
    thread.start()
    return job, thread


def click(ui, x, y):
    """Click at generator pixel (x, y), the way the browser reports it: display pixels."""
    s = display_scale(ui.height, ui.width)
    dx, dy = to_display((x, y), s)
    return handlers.add_point(ui, (round(dx), round(dy)))


def test_display_mapping_round_trips():
    assert display_scale(64, 64) == 8 and display_scale(512, 512) == 1 and display_scale(1024, 512) == 1
    assert display_scale(256, 128) == 2
    for s in (1, 2, 8):
        for p in [(0.0, 0.0), (10.0, 33.0), (63.0, 5.0)]:
            assert from_display(to_display(p, s), s) == pytest.approx(p)
    assert from_display((0, 7), 8) == (0.0, 0.0) and from_display((8, 511), 8) == (1.0, 63.0)


def test_points_alternate_and_edit(G):
    ui = new_state(G)
    assert "Handle 1" in click(ui, 10, 12)
    assert "Target 1" in click(ui, 20, 22)
    click(ui, 40, 41)
    assert ui.handles == [(10.0, 12.0), (40.0, 41.0)] and ui.targets == [(20.0, 22.0)]
    assert "handle" in handlers.remove_last_point(ui)
    assert ui.handles == [(10.0, 12.0)]
    assert "target" in handlers.remove_last_point(ui)
    assert ui.targets == []
    handlers.clear_points(ui)
    assert ui.handles == [] and ui.targets == []
    assert "no points" in handlers.remove_last_point(ui)


def test_overlay_marks_points_in_colour(G):
    ui = new_state(G)
    click(ui, 16, 16)
    click(ui, 48, 48)
    img = np.asarray(handlers.view(ui))
    assert img.shape == (512, 512, 3)
    hx, hy = (int(round(v)) for v in to_display((16, 16), 8))
    tx, ty = (int(round(v)) for v in to_display((48, 48), 8))
    assert tuple(img[hy, hx]) == (230, 40, 40)    # handle: red
    assert tuple(img[ty, tx]) == (40, 90, 235)    # target: blue
    with pytest.raises(AssertionError):
        render_overlay(ui.image, [], [(1.0, 1.0)])


def test_bad_points_are_refused(G):
    ui = new_state(G)
    with pytest.raises(UserError, match="Click inside"):
        handlers.add_point(ui, None)
    with pytest.raises(UserError, match="outside"):
        handlers.add_point(ui, (600, 10))
    with pytest.raises(UserError, match="outside"):
        handlers.add_point(ui, (-20, 10))
    with pytest.raises(UserError, match="add a handle"):
        handlers.start_drag(ui)
    click(ui, 10, 10)
    with pytest.raises(UserError, match="no target"):
        handlers.start_drag(ui)
    assert ui.job is None and ui.snap.drags() == []
    with pytest.raises(UserError, match="outside"):
        handlers.check_points([(1.0, 1.0)], [(64.0, 3.0)], 64, 64)
    with pytest.raises(UserError):
        handlers.parse_points("[[1, 2, 3]]")
    with pytest.raises(UserError):
        handlers.parse_points("not json")
    with pytest.raises(UserError):
        handlers.parse_points([])
    assert handlers.parse_points([[[1, 2], [3, 4]]]) == ([(1.0, 2.0)], [(3.0, 4.0)])
    with pytest.raises(UserError, match="lr"):
        handlers.make_config(lr="abc", max_steps=3, mask_lambda=1)
    with pytest.raises(UserError, match="max_steps"):
        handlers.make_config(lr=1e-3, max_steps=2.5, mask_lambda=1)
    with pytest.raises(UserError, match="space"):
        handlers.make_state(REF, "cpu", 0, 0.7, "z")


def test_drag_changes_image_and_history(G):
    ui = new_state(G, max_steps=4)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    click(ui, 20, 20)
    click(ui, 30, 26)
    job = handlers.run_blocking(ui)
    assert job.steps == 4 and ui.job is None
    assert not np.array_equal(ui.image, ui.start_image)
    assert np.array_equal(ui.image, render(ui))
    (drag,) = ui.snap.drags()
    assert drag.steps == 4 and len(ui.frames[ui.snap.entry.id]) >= 2
    assert ui.handles == list(ui.snap.handles) and ui.targets == [(30.0, 26.0)]
    assert "1 drag(s) done" in handlers.stats_text(ui)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()), "the shared generator changed"

    ws_after, image_after = ws(ui), ui.image
    assert "Undid" in handlers.undo(ui)
    assert torch.equal(ws(ui), ws(new_state(G)))
    assert np.array_equal(ui.image, ui.start_image) and ui.snap.drags() == [] and ui.snap.can_redo
    assert ui.handles == [(20.0, 20.0)]
    assert "Redid" in handlers.redo(ui)
    assert torch.equal(ws(ui), ws_after) and len(ui.snap.drags()) == 1 and np.array_equal(ui.image, image_after)
    assert "Nothing" in handlers.redo(ui)
    handlers.reset_image(ui)
    assert np.array_equal(ui.image, ui.start_image) and ui.handles == [] and ui.snap.drags() == []
    assert "Nothing" in handlers.undo(ui)


def test_clicks_while_running_are_refused_and_stop_resumes(G):
    ui = new_state(G, max_steps=400)
    click(ui, 20, 20)
    click(ui, 44, 40)
    job, thread = in_background(ui)
    try:
        with pytest.raises(UserError, match="Stop"):
            click(ui, 5, 5)
        with pytest.raises(UserError, match="Stop"):
            handlers.start_drag(ui)
        with pytest.raises(UserError, match="Stop"):
            handlers.undo(ui)
        with pytest.raises(UserError, match="Stop"):
            handlers.clear_points(ui)
        deadline = threading.Event()
        while job.steps < 2 and not job.done.is_set():
            deadline.wait(0.02)
    finally:
        message = handlers.stop_drag(ui)
        thread.join(60)
    assert "Stopped" in message and not ui.running and job.steps < 400
    assert ui.handles == list(ui.snap.handles)
    assert np.array_equal(ui.image, render(ui)), "Stop must keep the last image"
    first = ui.snap.drags()[0].steps
    assert first == job.steps
    handlers.update_params(ui, 2e-3, 3, 1, 20.0)
    handlers.run_blocking(ui)
    second = ui.snap.drags()[-1]
    assert second.resume, "Start after Stop with the same points continues the drag"
    assert len(ui.snap.drags()) == 2 and second.steps == 3
    click(ui, 1, 1)
    click(ui, 2, 2)
    handlers.run_blocking(ui)
    assert not ui.snap.drags()[-1].resume, "new points start a new drag"


def test_masks_from_editor_layers(G):
    ui = new_state(G)
    s = display_scale(64, 64)
    layer = np.zeros((64 * s, 64 * s, 4), np.uint8)
    layer[0:16 * s, 0:32 * s] = (60, 200, 90, 255)     # flexible: top-left block
    layer[48 * s:, 48 * s:] = (255, 70, 70, 255)        # fixed: bottom-right block
    fixed, flexible = handlers.masks_from_editor({"background": None, "layers": [layer], "composite": None}, 64, 64)
    assert flexible.sum() == 16 * 32 and flexible[:16, :32].all()
    assert fixed.sum() == 16 * 16 and fixed[48:, 48:].all()
    assert "flexible" in handlers.set_masks(ui, fixed, flexible)
    engine_mask = handlers.effective_fixed_mask(ui)
    assert not engine_mask[:16, :32].any() and engine_mask[20:40].all() and engine_mask[48:, 48:].all()
    round_trip = handlers.masks_from_editor({"layers": [handlers.mask_layer(ui)]}, 64, 64)
    assert np.array_equal(round_trip[0], fixed) and np.array_equal(round_trip[1], flexible)
    overlay = np.asarray(handlers.view(ui)).astype(int)
    plain = np.asarray(handlers.plain_view(ui)).astype(int)
    assert np.abs(overlay[: 16 * s, : 32 * s] - plain[: 16 * s, : 32 * s]).mean() > 5, "mask tint is drawn"
    ui.show_mask = False
    assert np.array_equal(np.asarray(handlers.view(ui)), handlers.plain_view(ui))
    handlers.reset_mask(ui)
    assert ui.fixed_mask is None and ui.flexible_mask is None and handlers.effective_fixed_mask(ui) is None
    assert handlers.masks_from_editor(None, 64, 64) == (None, None)
    assert handlers.masks_from_editor({"layers": []}, 64, 64) == (None, None)
    with pytest.raises(UserError):
        handlers.masks_from_editor({"layers": [np.zeros((8, 8))]}, 64, 64)
    with pytest.raises(UserError):
        handlers.set_masks(ui, np.zeros((8, 8), bool), None)


def test_fixed_mask_reaches_the_engine(G):
    ui = new_state(G, max_steps=2)
    fixed = np.zeros((64, 64), bool)
    fixed[:, 40:] = True
    handlers.set_masks(ui, fixed, None)
    click(ui, 20, 20)
    click(ui, 25, 25)
    handlers.run_blocking(ui)
    assert np.array_equal(ui.snap.mask.astype(bool), fixed)
    assert np.array_equal(ui.snap.drags()[0].mask.astype(bool), fixed)


def test_two_sessions_never_share_points_or_latents(G):
    """Two users on one generator, dragging at the same time, get exactly what each gets alone."""
    def prepare(seed, pts):
        ui = new_state(G, seed=seed, max_steps=3)
        for p in pts:
            click(ui, *p)
        return ui

    pts_a = [(20, 20), (30, 30)]
    pts_b = [(50, 10), (40, 20), (10, 50), (12, 40)]
    alone_a = prepare(0, pts_a)
    handlers.run_blocking(alone_a)
    alone_b = prepare(5, pts_b)
    handlers.run_blocking(alone_b)

    a, b = prepare(0, pts_a), prepare(5, pts_b)
    threads = [in_background(a)[1], in_background(b)[1]]
    for thread in threads:
        thread.join(120)
    assert a.targets == [(30.0, 30.0)] and b.targets == [(40.0, 20.0), (12.0, 40.0)]
    assert a.handles == alone_a.handles and b.handles == alone_b.handles
    assert torch.allclose(ws(a), ws(alone_a), atol=1e-6)
    assert torch.allclose(ws(b), ws(alone_b), atol=1e-6)
    assert not torch.allclose(ws(a), ws(b))


def test_export_handlers_need_a_drag(G, tmp_path):
    ui = new_state(G)
    assert handlers.export_png(ui, tmp_path).stat().st_size > 0
    assert np.load(handlers.export_latent(ui, tmp_path)).shape == (1, G.num_ws, G.w_dim)
    with pytest.raises(UserError, match="drag first"):
        handlers.export_animation(ui, "gif", tmp_path)
    with pytest.raises(UserError, match="drag first"):
        handlers.export_recipe(ui, tmp_path)
    click(ui, 20, 20)
    click(ui, 24, 24)
    handlers.run_blocking(ui)
    assert ui.snap.drags(), "the drag moved"
    with pytest.raises(UserError, match="not available"):
        handlers.export_animation(ui, "avi", tmp_path)
    gif = handlers.export_animation(ui, "gif", tmp_path)
    assert gif.suffix == ".gif" and gif.stat().st_size > 0


def test_uploads_are_checked(tmp_path):
    bad = tmp_path / "model.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not a model file"):
        check_upload(bad, max_mb=10)
    big = tmp_path / "big.pkl"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(ValueError, match="more than this app accepts"):
        check_upload(big, max_mb=1)
    assert check_upload(SG2, max_mb=10) == SG2


def _demo(monkeypatch, **studio_kw):
    """The app's handlers without a server: (studio, page, panels); the setting names an offered local file
    as the start model."""
    monkeypatch.setenv("DRAGGAN_DEFAULT_MODEL", str(SG2))
    return app_panels(monkeypatch, **studio_kw)


def test_picking_a_model_sets_its_recommended_step_size(monkeypatch):
    """The zoo's `drag_lr` becomes the session's lr and the lr field's value; other models get the default."""
    import gradio as gr

    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: None)
    studio, page, panels = _demo(monkeypatch, max_upload_mb=1)
    state = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
    assert studio.drag_lr("cartoon-faces-128") == 4e-3 and studio.drag_lr(state.model.source) == 1e-3
    out = panels.model.change_model(state, "cartoon-faces-128", 0, 0.7, "w+", progress=None)
    cartoon = out[page.state]
    assert out[page.lr] == 4e-3 and cartoon.snap.config.lr == 4e-3
    assert cartoon.snap.config.max_steps == 3, "other settings carry over"
    out = panels.model.change_model(cartoon, str(SG2.resolve()), 0, 0.7, "w+", progress=None)
    assert out[page.lr] == 1e-3 and out[page.state].snap.config.lr == 1e-3
    assert panels.model.change_model(out[page.state], str(SG2.resolve()), 0, 0.7, "w+", progress=None) == unchanged()


def test_studio_refuses_bad_input_without_raising(tmp_path, monkeypatch):
    """The Gradio handlers turn every refusal into a warning and leave the outputs unchanged."""
    import gradio as gr

    warnings_shown = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings_shown.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: None)
    studio, page, panels = _demo(monkeypatch, max_upload_mb=1)
    out = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)
    state = out[page.state]
    assert state is not None and out[page.image].size == (512, 512) and "Tiny" in out[page.stats]

    bad = tmp_path / "notes.txt"
    bad.write_text("x")
    assert panels.model.load_own_model(state, str(bad), "", 0, 0.7, "w+", progress=None) == unchanged()
    assert "not a model file" in warnings_shown[-1]
    big = tmp_path / "huge.pkl"
    big.write_bytes(b"\0" * (2 * 2**20))
    panels.model.load_own_model(state, str(big), "", 0, 0.7, "w+", progress=None)
    assert "more than this app accepts" in warnings_shown[-1]
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"this is not a pickle")
    panels.model.load_own_model(state, str(corrupt), "", 0, 0.7, "w+", progress=None)
    assert "Could not load the model" in warnings_shown[-1]
    panels.model.load_own_model(state, None, "not a hub ref", 0, 0.7, "w+", progress=None)
    assert "not a Hub file" in warnings_shown[-1]

    refused = list(panels.drag.start(state))
    assert len(refused) == 1 and "add a handle" in refused[0][page.stats], "a refused Start says why in the status"

    class Click:
        index = (900, 900)

    latent = (state.seed, state.psi, state.space)
    assert panels.drag.click(state, *latent, Click()) == unchanged() and "outside" in warnings_shown[-1]
    assert panels.drag.click(None, *latent, Click()) == unchanged() and "Load a model" in warnings_shown[-1]
    panels.model.update_params(state, "fast", 3, 1, 20)
    assert "lr" in warnings_shown[-1]
    assert panels.export.export(state, "gif") == unchanged()
    assert state.snap is not None and state.workdir.is_dir(), "the session survives every refusal"


def test_extra_models_env_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAGGAN_EXTRA_MODELS", f"Tiny={SG2}{os.pathsep}{tmp_path / 'missing.pkl'}")
    settings.reload()
    choices = extra_model_choices()
    assert [c.available for c in choices] == [True, False]
    assert choices[0].label == "Tiny (local)" and choices[0].source == str(SG2.resolve())
    calls = []

    def loader(source, device):
        calls.append(source)
        return torch.nn.Linear(1, 1)

    cache = GeneratorCache(max_items=1, loader=loader)
    a = cache.get("a", torch.device("cpu"))
    assert cache.get("a", torch.device("cpu")) is a and calls == ["a"]
    cache.get("b", torch.device("cpu"))
    assert len(cache) == 1 and ("a", "cpu") not in cache


def test_studio_uploads_and_recipes(tmp_path, monkeypatch):
    """An uploaded model loads; a recipe naming an unknown server path replays on the session's own model."""
    import json

    import app
    import gradio as gr
    from draggan.service.studio import Studio

    infos, warnings_shown = [], []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings_shown.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    monkeypatch.delenv("DRAGGAN_EXTRA_MODELS", raising=False)
    settings.reload()
    studio = Studio(device="cpu", hub_online=False)
    studio.choices = [c for c in studio.choices if not c.available]    # as on a fresh offline machine
    demo = app.build_demo(studio)
    page, panels = demo.page, demo.panels
    out = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)
    assert page.state not in out and "No model is available offline" in out[page.stats]

    out = panels.model.load_own_model(None, str(SG2), "", 2, 0.7, "w+", progress=None)
    state = out[page.state]
    assert state.model.label == "stylegan2-tiny-64.pkl (uploaded)" and "uploaded" in out[page.stats]
    editor = out[page.editor]
    assert editor["background"].shape == (512, 512, 3) and editor["layers"] == [], "no mask yet, so no layer"
    handlers.update_params(state, 2e-3, 2, 1, 20.0)
    click(state, 20, 20)
    click(state, 26, 24)
    handlers.run_blocking(state)
    recipe_path = handlers.export_recipe(state, tmp_path)
    data = json.loads(recipe_path.read_text())
    assert data["model"] == "current" and len(data["model_sha256"]) == 64, "an upload's recipe names no path"
    data["model"] = "/somewhere/else/model.pkl"
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(data))

    latent = ws(state)
    workdir = state.workdir
    new_state = panels.export.load_recipe(state, str(moved), progress=None)[page.state]
    assert "Replayed 1 drag" in new_state.notice, "a path in a recipe means the current model, checked by content"
    assert "Replayed 1 drag" in handlers.stats_text(new_state) and not infos, "said in the status line, no toast"
    assert new_state is not state and torch.equal(ws(new_state), latent) and new_state.model == state.model
    assert not workdir.exists(), "the replaced session was released"
    assert panels.export.load_recipe(None, str(moved), progress=None) == unchanged()
    assert "not available here" in warnings_shown[-1]


def test_preload_keeps_models_on_disk_loaded(monkeypatch):
    """Start-up loads the default and every model already on this machine and pins them (never evicted), so
    ZeroGPU's forked workers inherit them; models not on disk are left for their first use."""
    from draggan.service.models import GeneratorCache

    studio, page, panels = _demo(monkeypatch, cache=GeneratorCache(max_items=1))
    loaded = studio.preload()
    assert str(SG2.resolve()) in loaded and "cartoon-faces-128" in loaded and "ffhq-512" not in loaded
    for source in loaded:
        assert (source, "cpu") in studio.cache
    other = str(DATA / "stylegan2-tiny-cond-32.pkl")                   # not offered: never preloaded
    studio.cache.get(other, torch.device("cpu"))
    assert (other, "cpu") in studio.cache and all((source, "cpu") in studio.cache for source in loaded)
    studio.cache.get(str(DATA / "stylegan3-t-tiny-64.pkl"), torch.device("cpu"))
    assert (other, "cpu") not in studio.cache, "unpinned models are evicted as before"
    assert all((source, "cpu") in studio.cache for source in loaded)


def test_the_measured_drag_cost_leaves_out_the_first_slow_steps_of_a_network(monkeypatch):
    """A network's first steps and renders in a process prepare their kernels; `drag_cost.measure` warms up and
    forgets those figures, so the cost it records is that of steps like the visitor's (here the first recorded
    step is made 1000× slower, as a cold kernel cache makes it: it must not reach the recorded cost)."""
    from draggan.checkpoints import load_generator
    from draggan.engine import drag_cost, render_costs

    G = load_generator(SG2, device="cpu")
    steps: list[float] = []
    record = render_costs.record

    def cold_first(synthesis, kind, seconds):
        if kind == "step":
            seconds = seconds * 1000 if not steps else seconds
            steps.append(seconds)
        record(synthesis, kind, seconds)

    monkeypatch.setattr(render_costs, "record", cold_first)
    per_step = drag_cost.measure(G, steps=4)
    assert len(steps) == 2 + 4 and steps[0] > 100 * max(steps[1:])
    assert per_step <= max(steps[2:]) and per_step == render_costs.cost(G.synthesis, "step")


def test_the_status_states_a_drags_cost_here_from_measured_step_and_render_times(monkeypatch):
    """Start-up measures the start model's drag (a few throwaway steps), so before Start the status line says
    what a 100-step drag costs on this hardware; the figure follows the measured costs (steps, the live view's
    share, the closing render), and a photo's tuned copy is costed as its base model."""
    import re

    from draggan.engine import drag_cost, render_costs
    from draggan.service.state import PhotoStart

    studio, page, panels = _demo(monkeypatch)
    G = studio.cache.get(str(SG2.resolve()), torch.device("cpu"))
    studio.preload()
    assert render_costs.cost(G.synthesis, "step") > 0 and render_costs.cost(G.synthesis, "full") > 0
    ui = new_state(G)
    ui.model = ModelRef(source=str(SG2.resolve()), label="tiny")
    said = handlers.stats_text(ui)
    assert re.search(r"a 100-step drag ≈ [0-9.]+ (s|min) on this CPU", said), said
    for _ in range(30):                   # a slower machine: 0.2 s a step, 0.3 s a preview, 0.8 s exact
        for kind, seconds in (("step", 0.2), ("preview", 0.3), ("full", 0.8)):
            render_costs.record(G.synthesis, kind, seconds)
    expected = 100 * 0.2 / (1 - 0.15) + 0.8
    assert abs(drag_cost.drag_seconds(G.synthesis, 100) - expected) < 0.05
    assert "a 100-step drag ≈ 24 s on this CPU" in handlers.stats_text(ui)
    for _ in range(30):                   # previews every 2 s would take 40 % of the time: capped at 35 %
        render_costs.record(G.synthesis, "preview", 0.8)
    assert abs(drag_cost.drag_seconds(G.synthesis, 100) - (100 * 0.2 / 0.65 + 0.8)) < 0.05
    ui.model = ModelRef(source="/nowhere/tuned", label="photo", private=True)
    assert "100-step drag" not in handlers.stats_text(ui), "nothing measured for a model not loaded here"
    ui.photo = PhotoStart(name="p.png", base=ModelRef(source=str(SG2.resolve()), label="tiny"),
                          target=np.zeros((4, 4, 3), np.uint8), w=np.zeros((1, 1, 1)), psnr=30.0, lpips=None,
                          loss_name="pixel", loss_note=None, steps=1, seconds=1.0)
    assert "a 100-step drag ≈ 32 s on this CPU" in handlers.stats_text(ui)


def test_live_view_is_timed_by_the_render_policy(G):
    """With the default display setting (0) the drag's view follows `RenderPolicy`: a preview while dragging,
    the exact image at the end, and the status line says which."""
    from draggan.engine import RenderPolicy

    ui = new_state(G, max_steps=12, render_every=0)
    ui.policy = RenderPolicy(share=0.9, max_age_s=1e-6, max_share=0.95)   # render after every step
    click(ui, 20, 20)
    click(ui, 44, 40)
    job = handlers.start_drag(ui)
    kinds, lines = [], []
    for update in handlers.follow(ui, job):
        if update.snapshot is None and update.image is not None:
            kinds.append(update.image_kind)
            lines.append(handlers.stats_text(ui))
    assert kinds and set(kinds) == {"preview"}, kinds
    assert any("live preview" in line for line in lines)
    assert np.array_equal(ui.image, render(ui)), "the drag ends on the exact image"
    assert "live preview" not in handlers.stats_text(ui)
    assert ui.render_every == 0


def test_the_tracker_setting_reaches_the_drag_and_the_recipe(G, tmp_path):
    import json

    import app
    from draggan.engine import methods
    from draggan.service.studio import Studio

    menu = app.build_demo(Studio(device="cpu", hub_online=False)).page.tracker
    assert menu.choices == [(m.label, m.name) for m in methods.METHODS.values()], "the menu is the registry"
    assert all(m.help in menu.info for m in methods.METHODS.values()), "with every method's help line"
    ui = new_state(G, max_steps=3)
    click(ui, 20, 20)
    click(ui, 30, 26)
    handlers.update_params(ui, 2e-3, 3, 2, 20.0, "freedrag-ms")
    handlers.run_blocking(ui)
    handlers.update_params(ui, 2e-3, 3, 2, 20.0, "official")
    handlers.run_blocking(ui)                         # same points, another tracker: a new drag, not a resume
    drags = ui.snap.drags()
    assert [d.tracker for d in drags] == ["freedrag-ms", "official"] and not drags[1].resume
    recipe = json.loads(handlers.export_recipe(ui, tmp_path).read_text())
    assert [d["tracker"] for d in recipe["drags"]] == ["freedrag-ms", "official"]
    for retired in ("magic", "freedrag", "centroid"):
        with pytest.raises(UserError, match="drag method must be one of official, freedrag-ms, freedrag-local"):
            handlers.update_params(ui, 2e-3, 3, 2, 20.0, retired)
    assert "the whole image may change" in handlers.stats_text(ui)
    handlers.update_params(ui, 2e-3, 3, 2, 20.0, "freedrag-local")
    assert "keeps the image away from the drag still" in handlers.stats_text(ui), "the status says what may change"


# ----------------------------------------------------------------------------------------------------------
# The Space as visitors meet it: default model, examples, arrived points, smooth masks, PNG provenance.

def test_default_model_follows_the_policy(monkeypatch, tmp_path):
    """GPU (a ZeroGPU Space) with the Hub reachable: FFHQ-512, with the bundled model one click away; a CPU:
    the bundled model; the setting wins when this app offers what it names. No network: the Hub's answer is
    given to the Studio."""
    import app
    from conftest import private_caches
    from draggan.service.studio import Studio

    private_caches(monkeypatch, tmp_path)
    monkeypatch.delenv("DRAGGAN_EXTRA_MODELS", raising=False)
    monkeypatch.delenv("DRAGGAN_DEFAULT_MODEL", raising=False)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    settings.reload()
    gpu_space = Studio(device="cpu", hub_online=True)
    assert gpu_space.default_model() == "ffhq-512" and gpu_space.bundled_model() == "cartoon-faces-128"
    page = app.build_demo(gpu_space).page
    assert page.model.value == "ffhq-512" and page.use_bundled.visible
    assert gpu_space.models_note() == "", "every zoo model can be downloaded"
    assert Studio(device="cpu", hub_online=False).default_model() == "cartoon-faces-128", "no Hub, not cached"

    monkeypatch.delenv("SPACES_ZERO_GPU")
    settings.reload()
    cpu = Studio(device="cpu", hub_online=True)
    assert cpu.default_model() == "ffhq-512", "the free CPU hardware starts on real faces too"
    assert app.build_demo(cpu).page.use_bundled.visible, "the cartoon stays one click away"
    monkeypatch.setenv("DRAGGAN_DEFAULT_MODEL", "cartoon-faces-128")
    settings.reload()
    cartoon = Studio(device="cpu", hub_online=True)
    assert cartoon.default_model() == "cartoon-faces-128"
    assert not app.build_demo(cartoon).page.use_bundled.visible, "the bundled model is the one shown"
    monkeypatch.setenv("DRAGGAN_DEFAULT_MODEL", "cartoon-faces-64")
    settings.reload()
    assert Studio(device="cpu", hub_online=False).default_model() == "cartoon-faces-64"
    monkeypatch.setenv("DRAGGAN_DEFAULT_MODEL", "ffhq-512")                 # named, but not available here
    settings.reload()
    offline = Studio(device="cpu", hub_online=False)
    assert offline.default_model() == "cartoon-faces-128"
    assert "offline mode is on" in offline.models_note()
    assert all("offline mode is on" in c.reason for c in offline.choices if not c.available)


def test_examples_load_their_model_seed_and_points(monkeypatch):
    """Each example offered sits inside its model's image; clicking one starts a session there with its points,
    ready for Start; FFHQ examples are offered only where FFHQ-512 is."""
    import gradio as gr

    from draggan.service.examples import EXAMPLES, offered

    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: None)
    assert {e.model for e in offered(["cartoon-faces-128"])} == {"cartoon-faces-128"}
    assert any(e.model == "ffhq-512" for e in offered(["cartoon-faces-128", "ffhq-512"]))
    studio, page, panels = _demo(monkeypatch)
    assert list(page.example_buttons) == offered(c.source for c in studio.available)
    example = next(e for e in EXAMPLES if e.model == "cartoon-faces-128")
    out = panels.model.load_example(None, example, "w+", progress=None)
    ui = out[page.state]
    assert ui.model.source == "cartoon-faces-128" and ui.seed == example.seed and out[page.model] == example.model
    assert ui.handles == list(example.handles) and ui.targets == list(example.targets)
    assert out[page.lr] == studio.drag_lr("cartoon-faces-128") and "press Start" in out[page.stats]
    assert out[page.ai_mark] is False, "the visible mark starts off for a generated image"
    for e in (e for e in EXAMPLES if e.model == "cartoon-faces-128"):
        handlers.check_points(e.handles, e.targets, 128, 128)
    ffhq = next(e for e in EXAMPLES if e.model == "ffhq-512")
    assert panels.model.load_example(ui, ffhq, "w+", progress=None) == unchanged(), "not available offline"
    before, after = out[page.compare]
    assert before.shape == after.shape == (512, 512, 3)


def test_arrived_points_are_done_and_start_asks_for_new_ones(G):
    """An arrived drag greys its points and refuses to drag them again; the next click starts a new set. A drag
    stopped by the step limit keeps its points for resuming; undo restores points as before."""
    ui = new_state(G, max_steps=3)
    click(ui, 30, 30)
    click(ui, 31, 30)                                    # within the arrival distance: arrives at once
    handlers.run_blocking(ui)
    text = handlers.stats_text(ui)
    assert ui.points_done and "Arrived" in text and "points are done" in text
    assert text.lower().count("arrived") == 1 and text.count("Click the image") == 1, "said once, not twice"
    shown = np.asarray(handlers.view(ui)).astype(int)
    red = (shown[..., 0] > 200) & (shown[..., 1] < 60) & (shown[..., 2] < 60)
    assert not red.any(), "done points are drawn grey, not as a red handle"
    with pytest.raises(UserError, match="arrived"):
        handlers.start_drag(ui)
    click(ui, 10, 10)
    assert not ui.points_done and ui.handles == [(10.0, 10.0)] and ui.targets == [], "a new set of points"
    click(ui, 50, 40)
    handlers.run_blocking(ui)
    assert not ui.points_done and "Step limit" in handlers.stats_text(ui)
    assert ui.handles and ui.targets == [(50.0, 40.0)], "the points stay for resuming"
    job = handlers.start_drag(ui)                       # resuming is allowed
    for _ in handlers.follow(ui, job):
        pass
    handlers.undo(ui)
    assert not ui.points_done and ui.handles, "undo restores the points as before"


def test_mask_edges_are_smooth_and_read_back_exactly(G):
    """The mask layer and the tint are upscaled without whole-block stair-steps, and reading the layer back
    gives the painted mask exactly (also for single pixels and noise)."""
    from draggan.service.drawing import sample_mask, upscale_mask

    ui = new_state(G)
    s = display_scale(64, 64)
    yy, xx = np.mgrid[:64, :64]
    disk = (xx - 30) ** 2 + (yy - 34) ** 2 <= 14 ** 2
    handlers.set_masks(ui, None, disk)
    alpha = handlers.mask_layer(ui)[..., 3] > 0
    blocky = np.kron(disk, np.ones((s, s), bool))
    assert alpha.shape == blocky.shape and (alpha != blocky).sum() > 4 * s, "edges are not whole blocks"

    def changing_rows(m):                                # rows where the outline's left edge moves
        starts = np.array([np.flatnonzero(r)[0] for r in m if r.any()])
        return (np.diff(starts) != 0).mean()

    assert changing_rows(blocky) <= 1 / s + 0.01 and changing_rows(alpha) > 0.5, "a slope, not whole blocks"
    assert np.array_equal(handlers.masks_from_editor({"layers": [handlers.mask_layer(ui)]}, 64, 64)[1], disk)
    rng = np.random.default_rng(0)
    for scale in (1, 2, 3, 4, 8):
        noise = rng.random((32, 32)) < 0.3
        up = np.asarray(upscale_mask(noise, (32 * scale, 32 * scale))) > 0
        assert np.array_equal(sample_mask(up, 32, 32), noise), scale


def test_png_export_says_what_it_is(G, tmp_path):
    """The PNG carries model, seed and every drag's points, says AI-generated; the visible mark is optional."""
    from PIL import Image

    ui = new_state(G, max_steps=2)
    click(ui, 20, 20)
    click(ui, 30, 26)
    handlers.run_blocking(ui)
    plain = handlers.export_png(ui, tmp_path)
    text = Image.open(plain).text
    assert text["AI"] == "AI-generated" and text["Seed"] == "0" and text["Model"] == "tiny"
    assert text["Points"] == "[[20, 20, 30, 26]]", "the drag's starting handle and target"
    assert np.array_equal(np.asarray(Image.open(plain).convert("RGB")), ui.image), "no mark by default"
    marked = np.asarray(Image.open(handlers.export_png(ui, tmp_path / "..", mark=True)).convert("RGB"))
    assert not np.array_equal(marked, ui.image), "the visible mark is stamped"
    assert "Upscaled" not in text and "Upscaled" not in Image.open(plain).info.get("Description", "")


def test_png_export_at_the_displayed_size_beside_the_native_one(G, tmp_path, monkeypatch):
    """'PNG as shown': the 64-px model's image as the page shows it (512 px, the display's upscale, no
    overlays), its metadata saying it was upscaled from 64×64; 'PNG' stays at the generator's size."""
    import gradio as gr
    from PIL import Image

    ui = new_state(G, max_steps=2)
    click(ui, 20, 20)
    click(ui, 30, 26)
    handlers.run_blocking(ui)
    shown = Image.open(handlers.export_png(ui, tmp_path, displayed=True))
    assert shown.size == (512, 512) and shown.filename.endswith("-512px.png")
    assert np.array_equal(np.asarray(shown.convert("RGB")), handlers.plain_view(ui)), "the image as shown"
    assert shown.text["Upscaled"].startswith("from 64x64") and "Upscaled from the generator's 64x64" in \
        shown.text["Description"] and shown.text["Points"] == "[[20, 20, 30, 26]]", "points in generator pixels"
    native = Image.open(handlers.export_png(ui, tmp_path))
    assert native.size == (64, 64) and "Upscaled" not in native.text
    _, page, panels = app_panels(monkeypatch)
    monkeypatch.setattr(gr, "Warning", lambda *a, **k: None)
    assert panels.export.export(ui, "png-shown")[page.exported]["value"].endswith("-512px.png")
    assert page.export_buttons["png-shown"].value == "PNG as shown"


def test_frames_stay_bounded_while_a_drag_runs(G, monkeypatch):
    """A long drag that renders every step never holds more than twice the per-drag frame cap."""
    from draggan.service import state as state_module

    monkeypatch.setattr(handlers, "MAX_FRAMES_PER_DRAG", 4)
    monkeypatch.setattr(state_module, "MAX_FRAMES_PER_DRAG", 4)
    seen = []
    keep = state_module.UIState.keep_frames
    monkeypatch.setattr(state_module.UIState, "keep_frames",
                        lambda self, entry, frames: (seen.append(len(frames)), keep(self, entry, frames)))
    ui = new_state(G, max_steps=30, render_every=1)
    click(ui, 5, 5)
    click(ui, 60, 60)
    handlers.run_blocking(ui)
    assert ui.snap.drags()[0].steps == 30
    assert seen and 4 < seen[0] <= 8, seen
    assert len(ui.frames[ui.snap.entry.id]) == 4


def test_every_refusal_is_an_answer_gradio_accepts(monkeypatch, tmp_path):
    """A refused action leaves the page as it was: its answer goes through Gradio's own output processing for
    the outputs the handler is wired to (an empty dict did not: "didn't return enough output values")."""
    import asyncio

    import gradio as gr

    warnings_shown = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings_shown.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: None)
    demo = build_app(monkeypatch)
    page, panels = demo.page, demo.panels
    state = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
    bad = tmp_path / "notes.txt"
    bad.write_text("x")

    def through_gradio(method, answer) -> None:
        fns = [fn for fn in demo.fns.values() if getattr(fn.fn, "__func__", None) is method.__func__
               or (method == panels.export.export and fn.outputs == [page.exported])]   # wired by lambdas
        assert fns, f"{method.__name__} is wired"
        for fn in fns:
            asyncio.run(demo.postprocess_data(fn, answer, None))

    refusals = [
        (panels.model.load_own_model, (state, str(bad), "", 0, 0.7, "w+"), {"progress": None}),
        (panels.model.change_model, (state, state.model.source, 0, 0.7, "w+"), {"progress": None}),
        (panels.export.export, (state, "gif"), {}),
        (panels.export.load_recipe, (None, str(bad)), {"progress": None}),
        (panels.photo.prepare_photo, (state, None, False), {}),
        (panels.drag.stop, (None,), {}),
        (panels.drag.undo, (None,), {}),
        (panels.drag.click, (state, 0, 0.7, "w+", type("Click", (), {"index": (900, 900)})()), {}),
        (panels.drag.paint_mask, (None, None), {}),
        (panels.drag.reset_mask, (None,), {}),
    ]
    for method, args, kwargs in refusals:
        through_gradio(method, method(*args, **kwargs))
    assert any("not a model file" in w for w in warnings_shown), "the refusals were refusals"


def test_fixed_points_text_names_the_points_outside_the_flexible_area():
    """Pure: a handle or target on a held pixel (True = fixed) is named; points on free pixels, or no mask, are
    not; points are (x, y), rounded to the nearest pixel and clamped to the image."""
    fixed = np.ones((20, 30), bool)
    fixed[5:10, 2:12] = False                           # flexible: rows 5–9, columns 2–11
    assert handlers.fixed_points_text([(3, 6)], [(11.4, 9.4)], fixed) == ""
    assert handlers.fixed_points_text([(3, 6)], [(25, 6)], None) == ""
    one = handlers.fixed_points_text([(3, 6)], [(25, 6)], fixed)
    assert one.startswith("Target 1 lies outside the flexible area") and "cannot get there" in one
    assert "handle" not in one.lower().split("flexible area")[0]
    both = handlers.fixed_points_text([(3, 6), (12, 6)], [(11, 9), (3, 10)], fixed)
    assert both.startswith("Handle 2 and target 2 lie outside") and "over them" in both
    assert handlers.fixed_points_text([(-5, 40)], [(3, 6)], fixed).startswith("Handle 1 lies"), "clamped"
    free = ~fixed                                       # a painted fixed area alone holds just that area
    assert handlers.fixed_points_text([(3, 6)], [(20, 15)], free).startswith("Handle 1 lies")


def test_short_of_target_text_says_what_would_help():
    """Pure: distance short, more steps and a larger step size always; a larger flexible area only when masked."""
    masked = handlers.short_of_target_text(200, [3.0, 5.66], masked=True)
    assert masked.startswith("Step limit reached after 200 steps, 5.7 px short")
    assert "more steps" in masked and "Start" in masked and "larger flexible area" in masked
    assert "larger step size" in masked
    plain = handlers.short_of_target_text(7, [1.0], masked=False)
    assert "7 steps, 1.0 px short" in plain and "flexible" not in plain and "larger step size" in plain


def test_status_before_start_and_after_a_short_drag_says_what_blocks_and_what_helps(G):
    """Before Start the status names a target outside the painted flexible area; a masked drag that hits its
    step limit ends saying a larger flexible area would help (an unmasked one does not mention it)."""
    ui = new_state(G, max_steps=2)
    click(ui, 20, 30)
    click(ui, 44, 30)
    assert "outside the flexible area" not in handlers.stats_text(ui)
    yy, xx = np.mgrid[:64, :64]
    handlers.set_masks(ui, None, (xx - 22) ** 2 + (yy - 30) ** 2 <= 8 ** 2)   # covers the handle, not the target
    assert "Target 1 lies outside the flexible area" in handlers.stats_text(ui)
    handlers.run_blocking(ui)
    text = handlers.stats_text(ui)
    assert "Step limit reached after 2 steps" in text and "larger flexible area" in text and "more steps" in text
    handlers.reset_mask(ui)
    assert "outside the flexible area" not in handlers.stats_text(ui)
    handlers.run_blocking(ui)
    text = handlers.stats_text(ui)
    assert "Step limit reached after 2 steps" in text and "flexible" not in text.split("\n")[-1]


def test_a_seed_makes_one_new_image_whichever_of_enter_blur_and_click_comes_first(monkeypatch):
    """The seed box asks for a new image on Enter and on blur, and a click on the image reads the seed too (its
    mouse-down is the blur): whatever the order, one new image per seed and the click's handle on it. When
    the blur's image is still being made, the click waits for it and answers only after its view was sent."""
    import time

    import gradio as gr

    monkeypatch.setattr(gr, "Info", lambda *a, **k: None)
    studio, page, panels = _demo(monkeypatch)
    made = []
    make_state = handlers.make_state

    def slow(model, device, seed, *args, **kwargs):
        made.append(int(seed))
        time.sleep(0.3)
        return make_state(model, device, seed, *args, **kwargs)

    monkeypatch.setattr(handlers, "make_state", slow)
    state = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
    centre = type("Click", (), {"index": (256, 256)})()

    # Enter, then the click's blur, then the click: the blur and the click find the seed applied.
    entered = list(panels.model.change_latent(state, 5, 0.7, "w+"))
    new = entered[0][page.state]
    assert new.seed == 5 and entered[-1] == unchanged() and state.replaced_by is new
    assert list(panels.model.change_latent(state, 5, 0.7, "w+")) == [unchanged()], "a repeat changes nothing"
    out = panels.drag.click(state, 5, 0.7, "w+", centre)       # the click's input was the replaced state
    assert page.state not in out and len(new.handles) == 1 and "Handle 1 placed" in out[page.stats]
    assert made.count(5) == 1

    # No Enter: the click comes first and applies the seed; the blur after it finds it applied.
    out = panels.drag.click(new, 6, 0.7, "w+", centre)
    six = out[page.state]
    assert six.seed == 6 and len(six.handles) == 1 and out[page.image] is not None
    assert list(panels.model.change_latent(new, 6, 0.7, "w+")) == [unchanged()]
    assert made.count(6) == 1

    # No Enter: the blur starts first and is still making the image when the click comes.
    blur = panels.model.change_latent(six, 7, 0.7, "w+")
    first, answer = [], []
    thread = threading.Thread(target=lambda: first.append(next(blur)))
    thread.start()
    while not made.count(7):
        time.sleep(0.01)
    clicker = threading.Thread(target=lambda: answer.append(panels.drag.click(six, 7, 0.7, "w+", centre)))
    clicker.start()
    thread.join()
    seven = first[0][page.state]
    assert "Handle" not in first[0][page.stats], "the blur's view was made before the click"
    clicker.join(timeout=0.5)
    assert clicker.is_alive(), "the click waits until the blur's view was sent"
    assert list(blur) == [unchanged()]                       # Gradio sent the view and asks for the next yield
    clicker.join(timeout=10)
    assert not clicker.is_alive() and page.state not in answer[0] and len(seven.handles) == 1
    assert made == [0, 5, 6, 7], "one new image per seed"


def test_the_progress_bar_and_the_status_count_the_same_steps_on_a_resumed_drag(G):
    """A drag that reached its step limit and is resumed: the progress bar, the running status and the end
    notice all count this Start's steps of its limit (issue 23: "step 269 of 270" against "after 200 steps")."""
    import re

    ui = new_state(G, max_steps=3)
    click(ui, 8, 8)
    click(ui, 56, 56)                                       # far: the limit comes first
    handlers.run_blocking(ui)
    assert ui.notice.startswith("Step limit reached after 3 steps")
    job = handlers.start_drag(ui)                           # Start again: resumes the same drag
    seen = []
    for _ in handlers.follow(ui, job):
        if ui.running:
            bar = re.search(r"<progress value='(\d+)' max='(\d+)'>.*step (\d+) of (\d+)", handlers.progress_html(ui))
            line = re.search(r"running · step (\d+) of (\d+)", handlers.stats_text(ui))
            seen.append((bar.groups(), line.groups()))
    assert seen and all(b[0] == b[2] == l[0] and b[1] == b[3] == l[1] == "3" for b, l in seen), seen
    assert seen[-1][0][0] == "3" and ui.notice.startswith("Step limit reached after 3 steps"), ui.notice
    assert ui.snap.steps == 6, "the engine's drag goes on from step 3"


def test_outcomes_are_said_in_the_status_line_not_in_toasts(monkeypatch):
    """A new image that reset points says so in the status line; nothing pops up over the image."""
    import gradio as gr

    infos = []
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: infos.append(msg))
    studio, page, panels = _demo(monkeypatch)
    state = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
    click(state, 20, 20)
    out = next(panels.model.change_latent(state, 3, 0.7, "w+"))
    assert "New image: points, mask and history were reset." in out[page.stats] and not infos


def test_the_pages_photo_preset_follows_the_one_default_rule(monkeypatch):
    """The page starts the photo preset (and its step fields) where the CLI does: `default_preset(device,
    resolution)`, for the model loaded: Quick for the 64-px fixture on a CPU, Fast for a 512-px model."""
    import dataclasses

    from draggan.inversion.presets import PRESETS, default_preset

    studio, page, panels = _demo(monkeypatch)
    out = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)
    assert out[page.preset] == default_preset("cpu", 64) == "Quick"
    assert (out[page.w_steps], out[page.wplus_steps], out[page.pti_steps]) == PRESETS["Quick"].steps
    ui = out[page.state]
    big = dataclasses.replace(ui, snap=dataclasses.replace(ui.snap, height=512, width=512))
    assert panels.photo.preset_for(big)[page.preset] == "Fast"
    assert studio.resolution_of("cartoon-faces-128") == 128 and studio.resolution_of("ffhq-512") == 512
    assert studio.resolution_of(str(SG2)) == 0, "not a zoo key: known once loaded (init_session sets it)"
    assert page.preset.value == default_preset("cpu", studio.resolution_of(studio.default_model()))
