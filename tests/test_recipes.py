"""Edit recipes (draggan/recipes.py): format v2 round trip, v1 paths never opened, hostile recipes refused
before anything is decoded (fast, bounded memory), replay as a stoppable job with progress, exact replay."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from draggan import recipes
from draggan.checkpoints import cache, load_generator, model_folder
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.engine import DragConfig, DragSession
from draggan.engine import methods
from draggan.recipes import CURRENT_MODEL, DragRecord, Recipe, RecipeError
from draggan.engine import snapshot as snapshots
from draggan.service import handlers
from draggan.app.events import unchanged
from draggan.service.models import ModelRef

from bench.recipe_refusals import nested_list, set_drag
from conftest import fixture_path

pytestmark = pytest.mark.usefixtures("one_thread")
SG2 = fixture_path("stylegan2-tiny-64.pkl")
SG2_SHA = hashlib.sha256(SG2.read_bytes()).hexdigest()
REF = ModelRef(str(SG2), "tiny")


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(SG2)["G_ema"]).requires_grad_(False)


def _mask() -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[10:20, 5:50] = True
    return mask


def _recipe(model: str = CURRENT_MODEL, sha: str = SG2_SHA, steps: tuple[int, int] = (3, 2)) -> Recipe:
    return Recipe(model=model, model_sha256=sha, model_label="tiny", seed=3, psi=0.6, space="w+",
                  image_size=(64, 64), drags=[
                      DragRecord(handles=[(10.0, 11.0)], targets=[(40.0, 41.5)], steps=steps[0], lr=2e-3,
                                 mask_lambda=5.0, mask=_mask()),
                      DragRecord(handles=[(50.0, 20.0), (30.0, 30.0)], targets=[(20.0, 50.0), (36.0, 30.0)],
                                 steps=steps[1], lr=3e-3, mask_lambda=7.0)])


# ----------------------------------------------------------------------------------------------------------
# Format.

def test_round_trip_v2(tmp_path):
    recipe = _recipe()
    path = recipes.save_recipe(recipe, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["version"] == 2 and data["model"] == CURRENT_MODEL and data["model_sha256"] == SG2_SHA
    assert [d["tracker"] for d in data["drags"]] == ["official", "official"]
    back = recipes.load_recipe(path)
    assert back.to_json() == data
    assert np.array_equal(back.drags[0].mask, _mask()) and back.drags[1].mask is None
    assert back.drags[1].handles == [(50.0, 20.0), (30.0, 30.0)]


def test_label_loses_markup_and_v1_has_no_content_key():
    data = _recipe().to_json()
    data["model_label"] = "cats.pkl (uploaded) ![x](https://evil.example/p.png) <img src=x> **b**"
    recipe = recipes.load_recipe(data)
    assert not any(c in recipe.model_label for c in "![]<>*/=") and recipe.model_label.startswith("cats.pkl (uploaded)")
    data.update(version=1)
    assert recipes.load_recipe(data).model_sha256 == "", "a v1 file cannot carry a content key"


def test_zoo_key_is_kept_and_a_path_never_is():
    assert Recipe(model="cartoon-faces-64", seed=0, psi=0.7, space="w", drags=[], image_size=(64, 64)).model \
        == "cartoon-faces-64"
    for name in ("/etc/passwd", str(SG2), "DragGan/DragGan-Models/x.pkl", "../cartoon-faces-64"):
        recipe = Recipe(model=name, seed=0, psi=0.7, space="w", drags=[], image_size=(64, 64))
        assert recipe.model == CURRENT_MODEL and name not in json.dumps(recipe.to_json())


def test_model_ref_and_content_key(tmp_path):
    """A zoo model is recorded by key, any other by the sha256 of its pickle, which its converted entry shares."""
    assert recipes.model_ref("cartoon-faces-64") == ("cartoon-faces-64", "")
    assert recipes.model_ref(str(SG2)) == (CURRENT_MODEL, SG2_SHA)
    load_generator(SG2, device="cpu")                       # writes the converted entry
    entry = cache.converted_cache_dir() / SG2_SHA
    assert model_folder.is_model_folder(entry) and recipes.model_key(str(entry)) == SG2_SHA
    assert recipes.model_key(str(entry / cache.WEIGHTS_FILE)) == SG2_SHA
    with pytest.raises(RecipeError, match="cannot identify") as info:
        recipes.model_key(str(tmp_path / "gone.pkl"))
    assert str(tmp_path) not in str(info.value)


class _OpenSpy:
    """Records every open/stat of the given paths through builtins, io, os and pathlib."""

    def __init__(self, monkeypatch, paths):
        self.watched = {os.path.realpath(p) for p in paths} | {str(p) for p in paths}
        self.touched: list[str] = []
        for module, name in [(builtins, "open"), (io, "open"), (os, "open"), (os, "stat"), (os, "lstat")]:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))
        for name in ("open", "read_bytes", "read_text", "stat", "exists", "is_file", "is_dir", "resolve"):
            monkeypatch.setattr(pathlib.Path, name, self._wrap(getattr(pathlib.Path, name)))

    def _wrap(self, func):
        def spy(target, *args, **kwargs):
            if isinstance(target, (str, os.PathLike)) and (str(target) in self.watched
                                                           or os.fspath(target) in self.watched):
                self.touched.append(str(target))
                raise AssertionError(f"{target} was opened")
            return func(target, *args, **kwargs)
        return spy


@pytest.mark.parametrize("hostile", ["/dev/zero", "/etc/passwd", str(SG2)], ids=["dev-zero", "passwd", "pkl"])
def test_v1_path_is_read_as_current_and_never_opened(G, tmp_path, monkeypatch, hostile):
    if hostile == str(SG2):                      # another visitor's upload, not the model this session uses
        hostile = str(tmp_path / "someone-elses.pkl")
        Path(hostile).write_bytes(SG2.read_bytes())
    data = _recipe().to_json()
    data.update(version=1, model=hostile)
    data.pop("model_sha256")
    for d in data["drags"]:
        d.pop("tracker")
    file = tmp_path / "v1.json"
    file.write_text(json.dumps(data))
    spy = _OpenSpy(monkeypatch, [hostile])
    recipe = recipes.load_recipe(file)
    assert recipe.model == CURRENT_MODEL and recipe.model_sha256 == ""
    assert [d.tracker for d in recipe.drags] == ["official", "official"]
    result = recipes.replay(recipe, G, current_model_key=SG2_SHA)
    assert len(result.drags) == 2 and not result.stopped
    ui = handlers.state_from_recipe(recipe, REF, "cpu")
    assert len(ui.snap.drags()) == 2 and ui.model == REF
    assert spy.touched == []
    assert hostile not in json.dumps(recipe.to_json())


# ----------------------------------------------------------------------------------------------------------
# Hostile recipes: each refused with its own message, within a second and a few MB.

def _with(change):
    data = _recipe().to_json()
    change(data)
    return data


HOSTILE = {
    "rle-claims-1.9GB": (set_drag(mask={"size": [43590, 43590], "counts": [1900046100]}), "differs from the image"),
    "rle-and-image-100k": (lambda d: (d.update(image_size=[100_000, 100_000]),
                                      d["drags"][0].update(mask={"size": [100_000, 100_000], "counts": [10**10]})),
                           "image_size must be"),
    "rle-short-sum": (set_drag(mask={"size": [64, 64], "counts": [100, 5]}), "do not cover"),
    "rle-negative": (set_drag(mask={"size": [64, 64], "counts": [-1, 4097]}), "whole numbers"),
    "rle-float-runs": (set_drag(mask={"size": [64, 64], "counts": [4096.0]}), "whole numbers"),
    "rle-too-many-runs": (set_drag(mask={"size": [64, 64], "counts": [0] * 5000 + [4096]}), "at most 4097 run"),
    "steps-1e9": (set_drag(steps=1e9), "steps: max_steps must be between 1 and 2000"),
    "steps-negative": (set_drag(steps=-1), "max_steps must be between"),
    "lr-nan": (set_drag(lr=float("nan")), "lr must be a finite number"),
    "lr-zero": (set_drag(lr=0.0), r"lr must be between 0 \(exclusive\) and 1"),
    "lr-huge": (set_drag(lr=5.0), "lr must be between"),
    "lambda-inf": (set_drag(mask_lambda=float("inf")), "mask_lambda must be a finite"),
    "nan-coordinate": (set_drag(handles=[[float("nan"), 3.0]]), "handles point 1 must hold finite numbers"),
    "outside-coordinate": (set_drag(targets=[[64.0, 3.0]]), "outside the 64×64 image"),
    "string-coordinate": (set_drag(handles=[["1", "2"]]), "finite numbers"),
    "deep-nesting": (set_drag(handles=nested_list(5000)), "nested too deeply"),
    "5000-pairs": (set_drag(handles=[[1.0, 1.0]] * 5000, targets=[[2.0, 2.0]] * 5000), "at most 64 point pairs"),
    "201-drags": (lambda d: d.update(drags=d["drags"][1:] * 201), "at most 200 drags"),
    "seed-huge": (lambda d: d.update(seed=2**40), "seed must be between"),
    "psi-nan": (lambda d: d.update(psi=float("nan")), "psi must be a finite"),
    "space": (lambda d: d.update(space="z"), "latent space"),
    "tracker-path": (set_drag(tracker="../../etc/passwd"), "tracker must be a short"),
    "sha-not-hex": (lambda d: d.update(model_sha256="../x"), "model_sha256"),
    "version-newer": (lambda d: d.update(version=3), "newer"),
    "version-text": (lambda d: d.update(version="2"), "bad recipe version"),
    "first-resumed": (set_drag(resume=True), "first drag"),
    "drag-not-object": (lambda d: d.update(drags=[[1, 2]]), "drag 1 must be an object"),
    "resume-text": (lambda d: d["drags"][1].update(resume="false"), "drag 2: resume must be true or false"),
    "lr-long-list": (set_drag(lr=[1] * 100_000), r"lr must be a number, got \[1, 1, 1, 1, \.\.\.\]"),
    "label-not-text": (lambda d: d.update(model_label=["x"]), "model and model_label must be text"),
}


def _bounded(call):
    """Run `call`, expecting a RecipeError; return it with the seconds and peak traced MB it took."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(RecipeError) as info:
            call()
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return info.value, seconds, peak


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_recipe_is_refused_quickly(name):
    change, message = HOSTILE[name]
    data = _with(change)
    error, seconds, peak = _bounded(lambda: recipes.load_recipe(data))
    assert __import__("re").search(message, str(error)), str(error)
    assert seconds < 2.0 and peak < 64, (seconds, peak)
    assert "\n" not in str(error) and len(str(error)) < 200, "one short line"


@pytest.mark.parametrize("name", ["lr-nan", "nan-coordinate", "steps-1e9"])
def test_hostile_recipe_file_is_refused_the_same_way(name, tmp_path):
    """JSON files may carry NaN literals; the file route gives the same message as the dict route."""
    file = tmp_path / "r.json"
    file.write_text(json.dumps(_with(HOSTILE[name][0])))
    error, _, _ = _bounded(lambda: recipes.load_recipe(file))
    assert __import__("re").search(HOSTILE[name][1], str(error))


def test_deeply_nested_text_is_refused_before_parsing():
    text = '{"format": "draggan-studio-recipe", "drags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error, seconds, peak = _bounded(lambda: recipes.parse_recipe(text))
    assert "nested too deeply" in str(error) and seconds < 2.0 and peak < 64


@pytest.mark.parametrize("source", ["huge-file", "/dev/zero"])
def test_huge_files_are_refused_after_a_bounded_read(tmp_path, source):
    if source == "huge-file":
        path = tmp_path / "huge.json"
        data = _recipe().to_json()
        data["model_label"] = "x" * (5 * 2**20)
        path.write_text(json.dumps(data))
    else:
        path = Path(source)
    error, seconds, peak = _bounded(lambda: recipes.load_recipe(path))
    assert "larger than" in str(error) and seconds < 2.0 and peak < 3 * recipes.LIMITS.recipe_bytes / 2**20
    assert str(tmp_path) not in str(error)


def test_unreadable_file_message_has_no_path(tmp_path):
    error, _, _ = _bounded(lambda: recipes.load_recipe(tmp_path / "missing.json"))
    assert "cannot read the recipe file" in str(error) and str(tmp_path) not in str(error)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    error, _, _ = _bounded(lambda: recipes.load_recipe(bad))
    assert "not UTF-8" in str(error)


def test_equal_masks_are_decoded_once_and_masks_are_capped(monkeypatch):
    data = _recipe().to_json()
    data["drags"] = [dict(data["drags"][0]) for _ in range(5)]
    recipe = recipes.load_recipe(data)
    assert all(d.mask is recipe.drags[0].mask for d in recipe.drags), "one shared array"
    assert not recipe.drags[0].mask.flags.writeable
    monkeypatch.setattr(recipes, "LIMITS", dataclasses.replace(recipes.LIMITS, mask_pixels=3 * 64 * 64))
    distinct = _recipe().to_json()
    distinct["drags"] = []
    for i in range(4):
        mask = np.zeros((64, 64), bool)
        mask[i, :] = True
        distinct["drags"].append(DragRecord(handles=[(1.0, 1.0)], targets=[(9.0, 9.0)], steps=1, lr=1e-3,
                                            mask_lambda=1.0, mask=mask).to_json())
    with pytest.raises(RecipeError, match="exceed 12288 decoded pixels"):
        recipes.load_recipe(distinct)
    distinct["drags"] = distinct["drags"][:3]
    assert len(recipes.load_recipe(distinct).drags) == 3


# ----------------------------------------------------------------------------------------------------------
# Replay.

def test_replay_reproduces_the_original_drag(G):
    """A drag run directly on a DragSession, recorded, saved and replayed lands on the same latent."""
    session = DragSession(G, seed=5, psi=0.7, config=DragConfig(space="w+", lr=2e-3, mask_lambda=10.0))
    mask = _mask()
    records = []
    for handles, targets, steps, m in [([(20.0, 20.0)], [(28.0, 24.0)], 4, mask),
                                       ([(50.0, 50.0)], [(44.0, 56.0)], 3, None)]:
        session.set_points(handles, targets)
        session.set_mask(m)
        taken = len({r.step for r in session.run(max_steps=steps, render_every=0)})
        records.append(DragRecord(handles=handles, targets=targets, steps=taken, lr=2e-3, mask_lambda=10.0,
                                  mask=m))
    recipe = recipes.load_recipe(Recipe(model=CURRENT_MODEL, model_sha256=SG2_SHA, seed=5, psi=0.7, space="w+",
                                        image_size=(64, 64), drags=records).to_json())
    progress = []
    result = recipes.replay(recipe, G, current_model_key=SG2_SHA, render_every=2,
                            on_step=lambda p: progress.append((p.drag, p.drags, p.step, p.steps)))
    assert torch.equal(result.session.ws, session.ws) and result.session.handles == session.handles
    assert not result.stopped and [d.record.steps for d in result.drags] == [4, 3]
    steps = sorted(set(progress))
    assert steps == [(1, 2, 1, 4), (1, 2, 2, 4), (1, 2, 3, 4), (1, 2, 4, 4), (2, 2, 1, 3), (2, 2, 2, 3), (2, 2, 3, 3)]
    assert [len(d.frames) for d in result.drags] == [2, 2], "every 2nd step and the last"
    assert result.start_image.shape == (64, 64, 3)
    assert result.session.undo() and result.session.undo(), "each drag is one undo entry"
    assert not torch.equal(recipes.replay(_recipe(steps=(1, 2)), G).session.ws,
                           recipes.replay(_recipe(steps=(3, 2)), G).session.ws), "steps matter"


def test_stop_event_stops_a_long_replay(G):
    recipe = _recipe(steps=(2000, 2000))
    stop = threading.Event()

    def on_step(p):
        if p.step == 3:
            stop.set()

    t0 = time.perf_counter()
    result = recipes.replay(recipe, G, stop_event=stop, on_step=on_step)
    assert time.perf_counter() - t0 < 20
    assert result.stopped and len(result.drags) == 1 and result.drags[0].record.steps == 3
    assert result.session.steps == 3
    stop_early = threading.Event()
    stop_early.set()
    assert recipes.replay(recipe, G, stop_event=stop_early).drags == []


def test_stop_from_another_thread(G):
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.perf_counter()
    result = recipes.replay(_recipe(steps=(2000, 2000)), G, stop_event=stop)
    assert result.stopped and time.perf_counter() - t0 < 20
    assert 0 < sum(d.record.steps for d in result.drags) < 4000


def test_replay_checks_the_model(G):
    other = "0" * 64
    with pytest.raises(RecipeError, match="another model"):
        recipes.replay(_recipe(), G, current_model_key=other)
    with pytest.raises(RecipeError, match="zoo model 'cartoon-faces-64'"):
        recipes.replay(_recipe(model="cartoon-faces-64", sha=""), G, current_model_key=SG2_SHA)
    recipes.check_model_key(_recipe(model="cartoon-faces-64", sha=""), "cartoon-faces-64")
    recipes.check_model_key(_recipe(sha=""), other)         # v1-style "current": any model of the size
    small = generator_from_persistent(read_network_pickle(fixture_path("stylegan2-tiny-cond-32.pkl"))["G_ema"])
    with pytest.raises(RecipeError, match="64×64"):
        recipes.replay(_recipe(), small, current_model_key=SG2_SHA)


def test_tracker_is_recorded_and_replayed(G):
    data = _recipe(steps=(1, 1)).to_json()
    data["drags"][0]["tracker"] = "other-tracker"
    recipe = recipes.load_recipe(data)
    assert recipe.drags[0].tracker == "other-tracker" and recipe.to_json()["drags"][0]["tracker"] == "other-tracker"
    with pytest.raises(RecipeError, match="no drag method 'other-tracker'"):
        recipes.replay(recipe, G)

    data["drags"][0]["tracker"] = "freedrag-ms"
    recipe = recipes.load_recipe(data)
    result = recipes.replay(recipe, G)
    drags = result.session.snapshot().drags()
    assert [d.tracker for d in drags] == ["freedrag-ms", "official"], "each drag replays with its recorded method"
    again = recipes.replay(recipes.load_recipe(data), G).session
    assert torch.equal(again.ws, result.session.ws)


@pytest.mark.parametrize("retired", ["freedrag", "centroid"])
def test_a_recipe_naming_a_retired_method_replays_with_official_and_says_so_in_one_line(G, retired):
    data = _recipe(steps=(2, 2)).to_json()
    data["drags"][1]["tracker"] = retired
    recipe = recipes.load_recipe(data)
    assert recipe.notes == (f"drag 2: the drag method {retired!r} was retired; replayed with 'official', the "
                            f"nearest kept one (the image can differ from the original)",)
    assert [d.tracker for d in recipe.drags] == ["official", "official"]
    replayed = recipes.replay(recipe, G).session
    data["drags"][1]["tracker"] = "official"
    official = recipes.load_recipe(data)
    assert official.notes == () and torch.equal(replayed.ws, recipes.replay(official, G).session.ws)


@pytest.mark.parametrize("tracker", methods.names())
def test_a_recipe_records_each_tracker_and_replays_the_same_drag(G, tracker):
    recipe = Recipe(model=CURRENT_MODEL, model_sha256=SG2_SHA, model_label="tiny", seed=3, psi=0.6, space="w+",
                    image_size=(64, 64),
                    drags=[DragRecord(handles=[(10.0, 11.0)], targets=[(30.0, 21.5)], steps=8, lr=3e-3,
                                      mask_lambda=5.0, tracker=tracker)])
    loaded = recipes.load_recipe(recipe.to_json())
    assert loaded.drags[0].tracker == tracker
    replayed = recipes.replay(loaded, G).session
    assert [d.tracker for d in replayed.snapshot().drags()] == [tracker]
    direct = DragSession(G, seed=3, psi=0.6, config=DragConfig(lr=3e-3, space="w+", mask_lambda=5.0,
                                                                tracker=tracker))
    direct.set_points([(10.0, 11.0)], [(30.0, 21.5)])
    for _ in range(8):
        direct.step()
    assert torch.equal(replayed.ws, direct.ws) and replayed.handles == direct.handles
    assert not torch.equal(replayed.ws, DragSession(G, seed=3, psi=0.6).ws), "the replay moved the latent"


def test_state_from_recipe_checks_the_source(G, tmp_path):
    ui = handlers.state_from_recipe(_recipe(steps=(2, 1)), REF, "cpu")
    assert ui.model == REF and len(ui.snap.drags()) == 2
    assert handlers.recipe_of(ui).to_json()["model_sha256"] == SG2_SHA
    copy = tmp_path / "other.pkl"
    copy.write_bytes(SG2.read_bytes() + b"\0")
    with pytest.raises(handlers.UserError, match="another model"):
        handlers.state_from_recipe(_recipe(), ModelRef(str(copy), "copy"), "cpu")


def test_the_app_replays_a_v1_path_recipe_on_the_session_model(G, tmp_path, monkeypatch):
    """Through the app's recipe upload: a v1 file naming /dev/zero replays on the loaded model, unopened."""
    import app
    import gradio as gr
    from draggan import settings
    from draggan.service.studio import Studio

    shown = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: shown.append(msg))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: shown.append(msg))
    monkeypatch.delenv("DRAGGAN_EXTRA_MODELS", raising=False)
    settings.reload()
    demo = app.build_demo(Studio(device="cpu", hub_online=False))
    page, panels = demo.page, demo.panels
    state = panels.model.load_own_model(None, str(SG2), "", 3, 0.6, "w+", progress=None)[page.state]
    data = _recipe(steps=(2, 1)).to_json()
    data.update(version=1, model="/dev/zero")
    file = tmp_path / "v1.json"
    file.write_text(json.dumps(data))
    expected = recipes.replay(recipes.load_recipe(data), G).session.ws
    spy = _OpenSpy(monkeypatch, ["/dev/zero"])
    new_state = panels.export.load_recipe(state, str(file), progress=None)[page.state]
    assert spy.touched == [] and "Replayed 2 drag" in new_state.notice, "the status line says what was done"
    assert new_state.model == state.model and Path(state.model.source).is_dir(), "the upload was converted"
    assert torch.equal(torch.from_numpy(snapshots.full_latent(new_state.snap)), expected)
    hostile = _with(HOSTILE["rle-claims-1.9GB"][0])
    file.write_text(json.dumps(hostile))
    assert panels.export.load_recipe(new_state, str(file), progress=None) == unchanged()
    assert "differs from the image size" in shown[-1] and str(tmp_path) not in shown[-1]
    data["drags"][0]["tracker"] = "centroid"                     # a retired method: replayed, and said
    file.write_text(json.dumps(data))
    retired = panels.export.load_recipe(new_state, str(file), progress=None)[page.state]
    assert "Drag 1: the drag method 'centroid' was retired; replayed with 'official'" in retired.notice
