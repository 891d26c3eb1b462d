"""`python -m draggan` commands, and refusal of a malicious pickle by `load_generator`."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from draggan.checkpoints import UnsafePickleError, hub, load_generator
from draggan.cli import main
from draggan.images import to_uint8

from conftest import fixture_path, load_reference, private_caches

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch, tmp_path) -> Path:
    """Private caches, offline mode on, and no download can happen."""
    private_caches(monkeypatch, tmp_path)

    def no_download(**kwargs):
        raise AssertionError("no download expected")

    monkeypatch.setattr(hub, "hf_hub_download", no_download)
    return tmp_path


def _expected_png(name: str) -> np.ndarray:
    """The reference image (seed 0, psi 0.7, const noise) as the CLI should write it."""
    return to_uint8(torch.from_numpy(load_reference(name)["img0"]), keep_grey=True)


def test_generate_writes_the_seed_image(env, capsys) -> None:
    out = env / "out" / "seed0.png"
    code = main(["generate", "--model", str(fixture_path("stylegan2-tiny-64.pkl")), "--seed", "0", "--psi", "0.7",
                 "--noise-mode", "const", "--out", str(out), "--device", "cpu"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
    diff = np.abs(np.asarray(image).astype(int) - _expected_png("stylegan2-tiny-64").astype(int))
    assert diff.max() <= 1


def test_generate_conditional_model_with_class_index(env) -> None:
    out = env / "cond.png"
    code = main(["generate", "--model", str(fixture_path("stylegan2-tiny-cond-32.pkl")), "--seed", "0",
                 "--class-idx", "0", "--out", str(out), "--device", "cpu"])
    assert code == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (32, 32, 3)
    assert np.abs(image.astype(int) - _expected_png("stylegan2-tiny-cond-32").astype(int)).max() <= 1


def test_different_class_gives_a_different_image(env) -> None:
    images = []
    for idx in (0, 1):
        out = env / f"c{idx}.png"
        assert main(["generate", "--model", str(fixture_path("stylegan2-tiny-cond-32.pkl")), "--class-idx", str(idx),
                     "--out", str(out), "--device", "cpu"]) == 0
        images.append(np.asarray(Image.open(out)))
    assert not np.array_equal(images[0], images[1])


@pytest.mark.parametrize("extra", [[], ["--class-idx", "4"]])
def test_conditional_model_needs_a_valid_class_index(env, capsys, extra) -> None:
    out = env / "cond.png"
    code = main(["generate", "--model", str(fixture_path("stylegan2-tiny-cond-32.pkl")), "--out", str(out),
                 "--device", "cpu", *extra])
    assert code == 2 and "--class-idx between 0 and 3" in capsys.readouterr().err
    assert not out.exists()


def test_unavailable_model_is_reported_without_traceback(env, capsys) -> None:
    code = main(["generate", "--model", "ffhq-512", "--out", str(env / "x.png")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "stylegan2-ffhq-512x512.pkl" in err
    assert "Traceback" not in err


def test_models_lists_the_zoo_and_availability(env, capsys) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line.strip() and not line.startswith("Hub cache")}
    assert set(rows) >= {"cartoon-faces-128", "cartoon-faces-64", "ffhq-512", "human-512", "car-512", "lhq-256"}
    assert " local " in rows.pop("cartoon-faces-128") and " local " in rows.pop("cartoon-faces-64")
    assert all("unavailable offline" in row and "download needed" not in row for row in rows.values())
    assert "512x256" in rows["human-512"] and "offline mode: on" in lines[-1]


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"G_ema": _RunsShell(f"touch {marker}")}))
    return path


def test_load_generator_refuses_a_pickle_that_calls_os_system(env) -> None:
    marker = env / "pwned"
    evil = _evil_pickle(env / "evil.pkl", marker)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*(posix|os|nt)\.system"):
        load_generator(evil)
    assert not marker.exists()


def test_cli_refuses_the_malicious_pickle(env, capsys) -> None:
    marker = env / "pwned"
    out = env / "x.png"
    code = main(["generate", "--model", str(_evil_pickle(env / "evil.pkl", marker)), "--out", str(out)])
    assert code == 1 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_module_entry_point_runs(env) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "draggan", "models"], capture_output=True, text=True,
                            cwd=env, env=environment, timeout=120)
    assert result.returncode == 0 and "ffhq-512" in result.stdout and "unavailable offline" in result.stdout


def test_generate_without_model_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["generate", "--out", "x.png"])
    assert info.value.code == 2 and "--model" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# `replay`: an edit recipe re-run from its seed; refusals are one line and exit non-zero.

def _edit_recipe(env: Path, name: str = "current", **changes) -> tuple[Path, np.ndarray]:
    """A 2-drag recipe on the tiny model, and the image its original edit ended on."""
    from draggan import recipes
    from draggan.engine import DragConfig, DragSession

    G = load_generator(fixture_path("stylegan2-tiny-64.pkl"), device="cpu")
    torch.set_num_threads(1)
    session = DragSession(G, seed=4, psi=0.7, config=DragConfig(space="w", lr=2e-3))
    drags = []
    for handles, targets in [([(20.0, 20.0)], [(28.0, 24.0)]), ([(40.0, 40.0)], [(34.0, 46.0)])]:
        session.set_points(handles, targets)
        taken = len({r.step for r in session.run(max_steps=3, render_every=0)})
        drags.append(recipes.DragRecord(handles=handles, targets=targets, steps=taken, lr=2e-3, mask_lambda=20.0))
    _, sha = recipes.model_ref(str(fixture_path("stylegan2-tiny-64.pkl")))
    recipe = recipes.Recipe(model=name, model_sha256=sha if name == "current" else "", seed=4, psi=0.7,
                            space="w", image_size=(64, 64), drags=drags)
    data = recipe.to_json()
    data.update(changes)
    path = env / "edit-recipe.json"
    path.write_text(__import__("json").dumps(data))
    return path, session.render()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_replay_writes_the_edited_image_and_gif(env, capsys) -> None:
    import imageio.v3 as iio

    recipe, expected = _edit_recipe(env)
    out, gif = env / "out" / "result.png", env / "anim.gif"
    code = main(["replay", str(recipe), "--model", str(fixture_path("stylegan2-tiny-64.pkl")), "--out", str(out),
                 "--gif", str(gif), "--render-every", "1", "--device", "cpu"])
    assert code == 0 and "2 drag(s), 6 steps" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    assert iio.imread(gif, index=None).shape == (1 + 3 + 3, 64, 64, 3), "the start, then every step of both drags"


def test_replay_of_a_retired_method_says_so_in_one_line_and_replays_with_official(env, capsys) -> None:
    """The recipe's drags were made with "official" and are relabelled "freedrag" (retired): the replay runs them
    with "official", so the image is the original's, and one line per drag says what was replaced."""
    import json

    recipe, expected = _edit_recipe(env)
    data = json.loads(recipe.read_text())
    for drag in data["drags"]:
        drag["tracker"] = "freedrag"
    recipe.write_text(json.dumps(data))
    out = env / "retired.png"
    assert main(["replay", str(recipe), "--model", str(fixture_path("stylegan2-tiny-64.pkl")), "--out", str(out),
                 "--device", "cpu"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: drag {i}: the drag method 'freedrag' was retired; replayed with 'official', the "
                     f"nearest kept one (the image can differ from the original)" for i in (1, 2)]
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_replay_of_an_own_model_recipe_needs_model(env, capsys) -> None:
    recipe, _ = _edit_recipe(env)
    code = main(["replay", str(recipe), "--out", str(env / "x.png")])
    assert code == 2 and "pass --model SOURCE" in _one_line_error(capsys)
    assert not (env / "x.png").exists()


@pytest.mark.parametrize("hostile", ["/dev/zero", "/etc/passwd"])
def test_replay_of_a_v1_path_recipe(env, capsys, monkeypatch, hostile) -> None:
    """A v1 recipe naming a path is refused without --model and replays with it; the path is never opened."""
    import builtins
    import io

    recipe, expected = _edit_recipe(env, version=1, model=hostile, model_sha256="")
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open
    opened = []

    def spy(real):
        def wrapped(file, *args, **kwargs):
            if str(file) == hostile:
                opened.append(file)
            return real(file, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    monkeypatch.setattr(os, "open", spy(real_os_open))
    assert main(["replay", str(recipe), "--out", str(env / "x.png")]) == 2
    assert "pass --model" in _one_line_error(capsys)
    out = env / "y.png"
    assert main(["replay", str(recipe), "--model", str(fixture_path("stylegan2-tiny-64.pkl")), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), expected) and opened == []


def test_replay_refusals_are_one_line(env, capsys) -> None:
    tiny, cond = str(fixture_path("stylegan2-tiny-64.pkl")), str(fixture_path("stylegan2-tiny-cond-32.pkl"))
    recipe, _ = _edit_recipe(env)
    out = str(env / "x.png")
    assert main(["replay", str(recipe), "--model", cond, "--out", out]) == 1
    assert "another model" in _one_line_error(capsys)
    zoo, _ = _edit_recipe(env, name="cartoon-faces-64")
    assert main(["replay", str(zoo), "--model", tiny, "--out", out]) == 1
    assert "zoo model 'cartoon-faces-64'" in _one_line_error(capsys)
    hostile = env / "nan.json"
    hostile.write_text(recipe.read_text().replace('"lr": 0.002', '"lr": NaN', 1))
    assert main(["replay", str(hostile), "--model", tiny, "--out", out]) == 1
    assert "lr must be a finite number" in _one_line_error(capsys)
    assert main(["replay", str(env / "missing.json"), "--model", tiny, "--out", out]) == 1
    assert "cannot read the recipe file" in _one_line_error(capsys)
    assert not Path(out).exists()


def test_replay_runs_as_a_module(env) -> None:
    recipe, expected = _edit_recipe(env)
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    bad = subprocess.run([sys.executable, "-m", "draggan", "replay", str(recipe), "--out", str(env / "x.png")],
                         capture_output=True, text=True, cwd=env, env=environment, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("resolution,flags,expected", [
    (512, [], ("Fast", (11, 6, 3), 256)),                         # CPU default from 512 px
    (128, [], ("Quick", (50, 25, 50), 0)),                        # CPU default below 512 px
    (512, ["--preset", "Balanced"], ("Balanced", (200, 100, 150), 0)),
    (128, ["--preset", "Fast", "--steps", "9", "--pti-steps", "0"], ("Fast", (6, 3, 0), 256)),
])
def test_invert_takes_the_pages_presets_by_name_and_defaults_by_device_and_resolution(
        env, capsys, monkeypatch, resolution, flags, expected) -> None:
    """`invert --preset NAME` runs the page's preset (one table, `inversion.presets`); without it, the page's
    default rule on this CPU; `--steps` / `--pti-steps` override its step counts."""
    from draggan import cli, inversion
    from draggan.networks.stylegan2 import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=2 * resolution, channel_max=8)).eval()
    monkeypatch.setattr(cli, "load_generator", lambda source, device=None: G)
    seen = []

    def probe(G, photo, config, progress=None):   # the inversion itself is tested in test_inversion.py
        seen.append(config)
        raise ValueError("probed")

    monkeypatch.setattr(inversion, "invert", probe)
    photo = env / "photo.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["invert", "--model", "any", str(photo), "--out", str(env / "w.npy"), *flags]) != 0
    name, steps, size = expected
    (config,) = seen
    assert ((config.w_steps, config.wplus_steps, config.pti_steps), config.project_size) == (steps, size)
    assert f"preset {name}" in capsys.readouterr().err


def test_invert_refuses_an_unknown_preset(env, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["invert", "--model", "cartoon-faces-128", "x.png", "--out", "w.npy", "--preset", "Turbo"])
    assert "invalid choice: 'Turbo'" in capsys.readouterr().err
