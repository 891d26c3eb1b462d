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
