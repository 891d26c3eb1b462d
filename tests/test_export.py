"""Export formats and edit recipes: RLE masks, PNG/npy/GIF/MP4 files, recipe round trip and exact replay."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from draggan import export
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan import recipes
from draggan.recipes import DragRecord, Recipe, RecipeError
from draggan.engine import snapshot as snapshots
from draggan.service import handlers
from draggan.service.models import ModelRef

SG2 = Path(__file__).parent / "data" / "stylegan2-tiny-64.pkl"


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(SG2)["G_ema"])


@pytest.mark.parametrize("kind", ["random", "empty", "full", "starts_true", "single"])
def test_mask_rle_round_trip(kind):
    rng = np.random.default_rng(0)
    mask = {"random": rng.random((13, 17)) > 0.6, "empty": np.zeros((8, 8), bool), "full": np.ones((8, 8), bool),
            "starts_true": np.eye(9, dtype=bool), "single": np.ones((1, 1), bool)}[kind]
    rle = recipes.mask_to_rle(mask)
    assert json.loads(json.dumps(rle)) == rle
    assert sum(rle["counts"]) == mask.size
    back = recipes.rle_to_mask(rle)
    assert back.dtype == bool and np.array_equal(back, mask)


def test_rle_rejects_bad_input():
    with pytest.raises(RecipeError):
        recipes.rle_to_mask({"size": [4, 4], "counts": [3, 3]})
    with pytest.raises(RecipeError):
        recipes.rle_to_mask({"size": [4, 4], "counts": [-1, 17]})
    with pytest.raises(RecipeError):
        recipes.rle_to_mask({"counts": [16]})


def test_png_and_latent_files(tmp_path):
    img = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    png = export.save_png(img, tmp_path / "a.png")
    assert np.array_equal(np.asarray(Image.open(png)), img)
    ws = torch.randn(1, 10, 64)
    npy = export.save_latent(ws, tmp_path / "w.npy")
    loaded = np.load(npy)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, ws.numpy())
    with pytest.raises(AssertionError):
        export.save_latent(torch.zeros(10, 64), tmp_path / "bad.npy")


def test_gif_animation(tmp_path):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 120, 250)]
    gif = export.save_animation(frames, tmp_path / "drag.gif", fps=5)
    back = iio.imread(gif, index=None)
    assert back.shape[0] == 3 and back.shape[1:3] == (16, 16)
    assert abs(int(back[1, 0, 0, 0]) - 120) <= 4
    with pytest.raises(ValueError, match="no frames"):
        export.save_animation([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="same size"):
        export.save_animation([frames[0], np.zeros((8, 8, 3), np.uint8)], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="unsupported"):
        export.save_animation(frames, tmp_path / "x.avi")


def test_mp4_needs_ffmpeg(tmp_path, monkeypatch):
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 250)]
    monkeypatch.setattr(export, "mp4_available", lambda: False)
    assert export.animation_formats() == ("gif",)
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        export.save_animation(frames, tmp_path / "x.mp4")


@pytest.mark.skipif(not export.mp4_available(), reason="imageio-ffmpeg is not installed")
def test_mp4_animation(tmp_path):
    frames = [np.full((32, 32, 3), v, np.uint8) for v in (0, 100, 200, 250)]
    mp4 = export.save_animation(frames, tmp_path / "drag.mp4", fps=4)
    assert mp4.stat().st_size > 0
    assert iio.imread(mp4, plugin="FFMPEG", index=None).shape[0] == 4


def _recipe() -> Recipe:
    mask = np.zeros((64, 64), bool)
    mask[10:20, 5:50] = True
    return Recipe(model="tests/data/stylegan2-tiny-64.pkl", model_label="tiny", seed=3, psi=0.6, space="w",
                  image_size=(64, 64), drags=[
                      DragRecord(handles=[(10.0, 11.0)], targets=[(20.0, 21.5)], steps=3, lr=2e-3, mask_lambda=5.0,
                                 mask=mask),
                      DragRecord(handles=[(20.0, 21.0)], targets=[(20.0, 21.5)], steps=2, lr=2e-3, mask_lambda=7.0,
                                 resume=True)])


def test_recipe_round_trip(tmp_path):
    recipe = _recipe()
    path = recipes.save_recipe(recipe, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format"] == recipes.RECIPE_FORMAT and data["version"] == recipes.RECIPE_VERSION
    assert data["drags"][0]["mask"]["size"] == [64, 64]
    back = recipes.load_recipe(path)
    assert back.to_json() == recipe.to_json()
    assert np.array_equal(back.drags[0].mask, recipe.drags[0].mask) and back.drags[1].mask is None
    assert recipes.load_recipe(data).to_json() == data


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="something"), "not a DragGAN"),
    (lambda d: d.update(version=99), "newer"),
    (lambda d: d.pop("seed"), "incomplete"),
    (lambda d: d.update(space="z"), "latent space"),
    (lambda d: d["drags"][0].update(targets=[]), "same, non-zero"),
    (lambda d: d["drags"][0].update(resume=True), "first drag"),
    (lambda d: d.update(image_size=[32, 32]), "mask size"),
])
def test_bad_recipes_are_refused(tmp_path, change, message):
    data = _recipe().to_json()
    change(data)
    with pytest.raises(RecipeError, match=message):
        recipes.load_recipe(data)


def test_unreadable_recipe_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(RecipeError, match="cannot read"):
        recipes.load_recipe(path)


def test_replay_reproduces_the_edit(G, tmp_path):
    """An editor session (masked drag, stopped + resumed drag, then a new drag) replays to the same latent."""
    ref = ModelRef(str(SG2), "tiny")
    ui = handlers.make_state(ref, "cpu", 7, 0.7, "w+", handlers.make_config(lr=2e-3, max_steps=2, mask_lambda=10.0),
                             render_every=5)
    flexible = np.zeros((64, 64), bool)
    flexible[8:40, 8:40] = True
    handlers.set_masks(ui, None, flexible)
    ui.snap = snapshots.set_points(ui.snap, [(20.0, 20.0)], [(28.0, 24.0)])
    handlers.run_blocking(ui)
    handlers.update_params(ui, lr=2e-3, max_steps=1, render_every=5, mask_lambda=10.0)
    handlers.run_blocking(ui)                      # same points: resumes the drag
    handlers.reset_mask(ui)
    ui.snap = snapshots.set_points(ui.snap, ui.snap.handles + ((50.0, 50.0),), ui.snap.targets + ((45.0, 56.0),))
    handlers.run_blocking(ui)                      # new points: a new drag
    records = ui.snap.drags()
    assert [r.resume for r in records] == [False, True, False]
    assert [r.steps for r in records] == [2, 1, 1]
    assert records[0].mask is not None and records[2].mask is None
    latent = torch.from_numpy(snapshots.full_latent(ui.snap))

    path = handlers.export_recipe(ui, tmp_path)
    recipe = recipes.load_recipe(path)
    session = recipes.replay(recipe, G).session
    assert torch.equal(session.ws, latent)
    assert session.handles == list(ui.snap.handles)

    replayed = handlers.state_from_recipe(recipe, ref, "cpu")
    assert torch.equal(torch.from_numpy(snapshots.full_latent(replayed.snap)), latent)
    assert len(replayed.snap.drags()) == 3 and np.array_equal(replayed.image, ui.image)
    handlers.undo(replayed)
    assert len(replayed.snap.drags()) == 2

    short = recipes.load_recipe(path)
    short.drags[0].steps = 1
    assert not torch.equal(recipes.replay(short, G).session.ws, latent), "steps matter"

    other = generator_from_persistent(read_network_pickle(SG2.parent / "stylegan2-tiny-cond-32.pkl")["G_ema"])
    with pytest.raises(RecipeError, match="64×64"):
        recipes.replay(recipe, other)
