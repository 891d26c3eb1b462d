"""`draggan.checkpoints.model_folder`: the one reader/writer of "config.json + model.safetensors"."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from draggan import settings
from draggan.checkpoints import cache, load_converted, load_generator, model_folder, read_config, save_converted
from draggan.checkpoints.nvidia_pickle import generator_from_persistent, read_network_pickle
from draggan.errors import ModelFormatError
from draggan.data import procedural
from draggan.inversion.export import save_tuned_generator
from draggan.training.keypoints import KeypointNet, load_regressor, save_regressor
from draggan.training.train import export_generator

from conftest import fixture_path

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def _header_config(weights: Path) -> dict:
    with safetensors.safe_open(str(weights), framework="pt") as f:
        return json.loads(f.metadata()[model_folder.METADATA_KEY])


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    return generator_from_persistent(read_network_pickle(fixture_path("stylegan2-tiny-64.pkl"))["G_ema"])


def _image(G: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesis(G.latent_from_seed(0, 0.7), noise_mode="const")


def test_round_trip_writes_config_in_both_places(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    weights = model_folder.save_model_folder(tmp_path / "m", net, {"format_version": 1, "kind": "linear"},
                                             {"note": "provenance"})
    assert weights == tmp_path / "m" / model_folder.WEIGHTS_FILE
    expected = {"format_version": 1, "kind": "linear", "note": "provenance"}
    assert json.loads((tmp_path / "m" / model_folder.CONFIG_FILE).read_text()) == expected
    assert _header_config(weights) == expected
    state, config = model_folder.load_model_folder(tmp_path / "m")
    assert config == expected and state.keys() == net.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [model_folder.CONFIG_FILE, model_folder.WEIGHTS_FILE]


def test_a_lone_weights_file_carries_its_config(tmp_path: Path, G: torch.nn.Module) -> None:
    weights = save_converted(G, tmp_path / "folder", {"base_model": "tiny"})
    alone = tmp_path / "elsewhere" / "tiny.safetensors"
    alone.parent.mkdir()
    shutil.copyfile(weights, alone)
    assert read_config(alone)["base_model"] == "tiny"
    assert torch.equal(_image(load_generator(alone, device="cpu", use_cache=False)), _image(G))


def test_missing_or_bad_config_is_a_model_format_error(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    safetensors.torch.save_file({"x": torch.zeros(2)}, str(tmp_path / "plain" / model_folder.WEIGHTS_FILE))
    with pytest.raises(ModelFormatError, match="plain/model.safetensors: no config.json beside it and no config inside it"):
        model_folder.read_config(tmp_path / "plain")
    (tmp_path / "plain" / model_folder.CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(ModelFormatError, match="not a JSON object"):
        model_folder.read_config(tmp_path / "plain")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(ModelFormatError, match="junk.safetensors: unreadable model weights") as info:
        model_folder.load_state(tmp_path / "junk.safetensors")
    assert str(tmp_path) not in str(info.value), "no server directories in a user-facing message"


def test_failed_write_keeps_the_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_folder.save_model_folder(tmp_path, {"x": torch.ones(4)}, {"format_version": 1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(model_folder.safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        model_folder.save_model_folder(tmp_path, {"x": torch.zeros(4)}, {"format_version": 2})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_every_writer_goes_through_the_model_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    G: torch.nn.Module) -> None:
    """Cache entry, tuned generator, trained generator and keypoint regressor: each weights file has the
    config in its header, identical to its config.json, and loads back."""
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
    settings.reload()
    source = fixture_path("stylegan2-tiny-64.pkl")
    load_generator(source, device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(source)
    tuned = save_tuned_generator(G, tmp_path / "tuned")
    trained = export_generator(G, tmp_path / "trained", {"kimg": 1.0}) / model_folder.WEIGHTS_FILE
    net = KeypointNet(num_keypoints=procedural.NUM_KEYPOINTS, resolution=16, channels=2).eval()
    judge = save_regressor(net, tmp_path / "judge") / model_folder.WEIGHTS_FILE
    for weights in (entry / model_folder.WEIGHTS_FILE, tuned, trained, judge):
        assert _header_config(weights) == json.loads((weights.parent / model_folder.CONFIG_FILE).read_text())
    for weights in (entry / model_folder.WEIGHTS_FILE, tuned, trained):
        assert torch.equal(_image(load_converted(weights)), _image(G))
    assert _header_config(tuned)["source"] == "inversion (pivotal tuning)"
    assert _header_config(trained)["kimg"] == 1.0 and _header_config(judge)["kind"] == "keypoint-regressor"
    img = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(load_regressor(tmp_path / "judge")(img), net(img))


@pytest.mark.parametrize("name", ["cartoon-faces-64", "cartoon-faces-keypoints-64"])
def test_bundled_folders_load_unchanged(name: str) -> None:
    folder = CHECKPOINTS / name
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
    state, config = model_folder.load_model_folder(folder)
    assert config == json.loads((folder / model_folder.CONFIG_FILE).read_text())
    assert state and all(isinstance(t, torch.Tensor) for t in state.values())
    model = load_regressor(folder) if "keypoints" in name else load_converted(folder)
    assert isinstance(model, torch.nn.Module)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()} == digest
