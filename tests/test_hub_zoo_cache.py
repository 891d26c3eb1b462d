"""Model zoo, source resolution (Hub mocked: no test ever touches the network) and the converted cache."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from huggingface_hub.utils import LocalEntryNotFoundError

import draggan.checkpoints as checkpoints
from draggan.checkpoints import (ModelFormatError, ModelUnavailableError, UnknownModelError, builders, cache, hub,
                                 load_generator, model_folder)
from draggan.checkpoints.zoo import ZooEntry, get_model, list_models
from draggan.devices import pick_device
from draggan.errors import ZooError

from conftest import fixture_path, load_reference, private_caches

REPO = "DragGan/DragGan-Models"
HUB_FILES = {
    "ffhq-512": "stylegan2-ffhq-512x512.pkl", "ffhq-1024": "stylegan2-ffhq1024x1024.pkl",
    "afhqcat-512": "stylegan2-afhqcat-512x512.pkl",
    "lions-512": "stylegan2_lions_512_pytorch.pkl", "dogs-1024": "stylegan2_dogs_1024_pytorch.pkl",
    "elephants-512": "stylegan2_elephants_512_pytorch.pkl", "horses-256": "stylegan2_horses_256_pytorch.pkl",
    "car-512": "stylegan2-car-config-f.pkl", "cat-256": "stylegan2-cat-config-f.pkl",
    "human-512": "stylegan_human_v2_512.pkl", "lhq-256": "stylegan2-lhq-256x256.pkl",
}
TINY = "stylegan2-tiny-64"


class DownloadRecorder:
    """Stand-in for `hf_hub_download`: records its arguments and returns a prepared local file."""

    def __init__(self, result: Path | None = None, error: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.result = result
        self.error = error

    def __call__(self, **kwargs) -> str:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        assert self.result is not None, "unexpected download"
        return str(self.result)


@pytest.fixture
def env(monkeypatch, tmp_path) -> Path:
    """Private HF_HOME / converted cache, offline mode on, and any download attempt fails the test."""
    private_caches(monkeypatch, tmp_path)
    for name in ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "hf_hub_download", DownloadRecorder())
    monkeypatch.setattr(hub, "hub_reachable", _never_probe)
    return tmp_path


def _never_probe(timeout=None) -> bool:
    raise AssertionError("the Hub was probed although no network access was expected")


def _online(monkeypatch, recorder: DownloadRecorder) -> DownloadRecorder:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: True)
    monkeypatch.setattr(hub, "hf_hub_download", recorder)
    return recorder


def _put_in_hub_cache(root: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Lay out a file as huggingface_hub's cache does (refs/main → snapshots/<commit>/<file>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)
    return target


def _outputs(G: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ws, image) for `seed` as in the fixtures' references: psi 0.7, const noise, label one-hot at seed % c_dim."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    c = torch.zeros([1, G.c_dim])
    if G.c_dim > 0:
        c[0, seed % G.c_dim] = 1
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=0.7)
        return ws, G.synthesis(ws, noise_mode="const")


def _refuse_pickles(monkeypatch) -> None:
    def refuse(path):
        raise AssertionError(f"pickle {path} was read although the converted cache should have been used")
    monkeypatch.setattr(checkpoints.reader, "read_network_pickle", refuse)


# ----------------------------------------------------------------------------------------------- registry


def test_registry_lists_the_bundled_models_first_then_the_draggan_hub_models() -> None:
    default, small, *entries = list_models()
    assert (default.key, default.resolution) == ("cartoon-faces-128", (128, 128))
    assert (small.key, small.resolution) == ("cartoon-faces-64", (64, 64))
    for bundled in (default, small):
        assert bundled.is_local and bundled.local_path.is_dir() and bundled.format == "safetensors"
        assert bundled.drag_lr == 4e-3, "the benchmarked step size for the cartoon models"
    assert [e.key for e in entries] == list(HUB_FILES)
    for entry in entries:
        assert entry.repo_id == REPO and entry.filename == HUB_FILES[entry.key] and not entry.is_local
        assert entry.hub_ref == f"{REPO}/{entry.filename}"
        assert entry.family == "stylegan2" and entry.approx_size_mb > 100 and entry.name
        expected_format = "tf-pickle" if entry.key in ("car-512", "cat-256") else "nvidia-pickle"
        assert entry.format == expected_format
    assert get_model("human-512").resolution == (512, 256)
    assert get_model("car-512").resolution == (512, 512) and get_model("car-512").content == (384, 512)
    assert get_model("dogs-1024").resolution == (1024, 1024)
    assert get_model("ffhq-1024").resolution == (1024, 1024)


def test_unknown_key_names_the_valid_keys() -> None:
    with pytest.raises(UnknownModelError, match=r"'nope'.*ffhq-512.*lhq-256"):
        get_model("nope")


def _write_zoo(path: Path, models: list[dict]) -> Path:
    path.write_text(json.dumps({"format_version": 1, "models": models}))
    return path


HUB_ENTRY = dict(key="hub-a", name="A", repo_id="o/r", filename="a.pkl", format="nvidia-pickle",
                 family="stylegan2", resolution=[64, 64])


def test_local_entries_come_first_and_resolve_next_to_the_registry(env) -> None:
    zoo = _write_zoo(env / "zoo.json", [HUB_ENTRY, dict(key="bundled", name="B", path="models/b.pkl",
                                                        format="nvidia-pickle", family="stylegan2",
                                                        resolution=[64, 64])])
    entries = list_models(zoo)
    assert [e.key for e in entries] == ["bundled", "hub-a"]
    local = get_model("bundled", zoo)
    assert local.local_path == (env / "models" / "b.pkl").resolve() and local.hub_ref is None
    assert not hub.is_available_offline(local)
    with pytest.raises(ModelUnavailableError, match="bundled"):
        hub.resolve_source(local)
    local.local_path.parent.mkdir()
    shutil.copyfile(fixture_path(f"{TINY}.pkl"), local.local_path)
    assert hub.is_available_offline(local) and hub.resolve_source(local) == local.local_path


@pytest.mark.parametrize("change, field", [
    (dict(path="x.pkl"), "path"),                      # both a local path and a Hub file
    (dict(repo_id=None), "repo_id"),                   # Hub file without repo
    (dict(repo_id="no-owner"), "repo_id"),
    (dict(format="onnx"), "format"),
    (dict(family="biggan"), "family"),
    (dict(resolution=[512]), "resolution"),
    (dict(resolution=[512, 0]), "resolution"),
    (dict(content=[600, 512], resolution=[512, 512]), "content"),
    (dict(key="Has Space"), "key"),
    (dict(size=3), "size"),                            # unknown field
    (dict(drag_lr=0), "drag_lr"),
    (dict(drag_lr="fast"), "drag_lr"),
    (dict(drag_lr=True), "drag_lr"),
])
def test_malformed_entries_are_rejected_naming_the_field(env, change, field) -> None:
    raw = {k: v for k, v in {**HUB_ENTRY, **change}.items() if v is not None}
    with pytest.raises(ZooError, match=field) as info:
        list_models(_write_zoo(env / "zoo.json", [raw]))
    assert isinstance(info.value, ValueError) and str(env) not in str(info.value)


def test_duplicate_keys_are_rejected(env) -> None:
    with pytest.raises(ZooError, match="key must be unique; duplicate"):
        list_models(_write_zoo(env / "zoo.json", [HUB_ENTRY, HUB_ENTRY]))


@pytest.mark.parametrize("text, field", [
    ("{\"format_version\": 1, \"models\": [", "not valid JSON"),
    ("[]", "format_version"),
    ("{\"format_version\": 2, \"models\": []}", "format_version"),
    ("{\"format_version\": 1, \"models\": {}}", "models"),
    ("{\"format_version\": 1, \"models\": [7]}", "zoo entry must be an object"),
])
def test_a_malformed_registry_file_is_a_zoo_error_naming_it_not_its_folder(env, text, field) -> None:
    zoo = env / "zoo.json"
    zoo.write_text(text)
    with pytest.raises(ZooError, match=field) as info:
        list_models(zoo)
    assert str(env) not in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------- sources


def test_zoo_key_downloads_through_hf_hub_download(env, monkeypatch) -> None:
    recorder = _online(monkeypatch, DownloadRecorder(result=fixture_path(f"{TINY}.pkl")))
    entry = get_model("ffhq-512")
    pinned = dict(entry.__dict__, key="pinned-tiny", sha256=cache.file_sha256(fixture_path(f"{TINY}.pkl")))
    assert hub.resolve_source(ZooEntry(**pinned)) == fixture_path(f"{TINY}.pkl")
    (call,) = recorder.calls
    assert call["repo_id"] == REPO and call["filename"] == "stylegan2-ffhq-512x512.pkl"
    assert call["revision"] == entry.revision and Path(call["cache_dir"]) == env / "hf" / "hub"
    assert 0 < call["etag_timeout"] <= 10


@pytest.mark.parametrize("source", [
    "DragGan/DragGan-Models/stylegan2_lions_512_pytorch.pkl",
    "hf://DragGan/DragGan-Models/stylegan2_lions_512_pytorch.pkl",
    "https://huggingface.co/DragGan/DragGan-Models/resolve/main/stylegan2_lions_512_pytorch.pkl",
])
def test_hub_references_download_the_named_file(env, monkeypatch, source) -> None:
    recorder = _online(monkeypatch, DownloadRecorder(result=fixture_path(f"{TINY}.pkl")))
    G = load_generator(source, device="cpu")
    assert G.img_resolution == 64
    assert [(c["repo_id"], c["filename"]) for c in recorder.calls] == [(REPO, "stylegan2_lions_512_pytorch.pkl")]


def test_hub_reference_parsing() -> None:
    assert hub.parse_hub_ref("o/r/sub/f.pkl") == hub.HubRef("o/r", "sub/f.pkl")
    assert hub.parse_hub_ref("https://huggingface.co/o/r/blob/abc123/f.pkl") == hub.HubRef("o/r", "f.pkl", "abc123")
    for text in ("o/r", "f.pkl", "o//f.pkl", "o/r/../f.pkl"):
        assert hub.parse_hub_ref(text) is None


def test_offline_and_not_cached_raises_without_any_network_call(env) -> None:
    with pytest.raises(ModelUnavailableError, match=r"stylegan2-ffhq-512x512\.pkl.*DragGan/DragGan-Models.*offline"):
        load_generator("ffhq-512")
    with pytest.raises(ModelUnavailableError, match=r"some_file\.pkl.*local \.pkl path"):
        hub.resolve_source("hf://DragGan/DragGan-Models/some_file.pkl")
    assert hub.hf_hub_download.calls == []
    assert [e.key for e in list_models() if hub.is_available_offline(e)] == ["cartoon-faces-128",
                                                                                "cartoon-faces-64"]


def test_unreachable_hub_fails_fast_without_calling_the_downloader(env, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: False)
    with pytest.raises(ModelUnavailableError, match=r"stylegan2-cat-config-f\.pkl.*cannot be reached"):
        hub.resolve_source("cat-256")
    assert hub.hf_hub_download.calls == []


@pytest.mark.parametrize("error", [LocalEntryNotFoundError("connection error"), ConnectionError("reset"),
                                   TimeoutError("timed out")])
def test_download_failures_become_model_unavailable(env, monkeypatch, error) -> None:
    recorder = _online(monkeypatch, DownloadRecorder(error=error))
    with pytest.raises(ModelUnavailableError, match=r"stylegan2-lhq-256x256\.pkl") as info:
        hub.resolve_source("lhq-256")
    assert info.value.__cause__ is error and len(recorder.calls) == 1


def test_cached_hub_file_loads_offline(env) -> None:
    cached = _put_in_hub_cache(env / "hf" / "hub", REPO, "stylegan2-ffhq-512x512.pkl", fixture_path(f"{TINY}.pkl"))
    entry = ZooEntry(**dict(get_model("ffhq-512").__dict__, revision=None, sha256=None))
    assert hub.is_available_offline(entry) and hub.resolve_source(entry) == cached
    G = load_generator(entry, device="cpu")
    ref = load_reference(TINY)
    np.testing.assert_allclose(_outputs(G)[1].numpy(), ref["img0"], atol=1e-4)
    assert hub.hf_hub_download.calls == []


def test_missing_local_path_is_a_clear_file_not_found(env) -> None:
    with pytest.raises(FileNotFoundError,
                       match=r"nothere\.pkl.*zoo key \(cartoon-faces-128, cartoon-faces-64, ffhq-512"):
        load_generator(str(env / "nothere.pkl"))


# ----------------------------------------------------------------------------------------------- loading & cache


@pytest.mark.parametrize("name,family", [(TINY, "stylegan2"), ("stylegan2-tiny-cond-32", "stylegan2"),
                                         ("stylegan2-tf-tiny-64", "stylegan2"), ("stylegan3-t-tiny-64", "stylegan3"),
                                         ("stylegan3-r-tiny-64", "stylegan3")])
def test_pickle_to_cache_round_trip_gives_identical_outputs(env, monkeypatch, name, family) -> None:
    source = fixture_path(f"{name}.pkl")
    G1 = load_generator(source, device="cpu")
    assert not G1.training and not any(p.requires_grad for p in G1.parameters())
    entry = cache.converted_cache_dir() / cache.file_sha256(source)
    config = json.loads((entry / cache.CONFIG_FILE).read_text())
    assert config["format_version"] == 1 and config["family"] == family == G1.family
    assert config["init_kwargs"] == json.loads(json.dumps(G1.init_kwargs))
    assert config["sha256"] == cache.file_sha256(source) and config["source"] == str(source.resolve())
    assert set(safetensors.torch.load_file(str(entry / cache.WEIGHTS_FILE))) == set(G1.state_dict())

    _refuse_pickles(monkeypatch)
    G2 = load_generator(source, device="cpu")
    assert cache.has_converted(source)
    for a, b in zip(_outputs(G1), _outputs(G2)):
        assert torch.equal(a, b)
    np.testing.assert_allclose(_outputs(G2)[1].numpy(), load_reference(name)["img0"], atol=1e-4)


def test_converted_entry_loads_directly_as_folder_or_file(env, monkeypatch) -> None:
    G1 = load_generator(fixture_path(f"{TINY}.pkl"), device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(fixture_path(f"{TINY}.pkl"))
    _refuse_pickles(monkeypatch)
    for source in (entry, entry / cache.WEIGHTS_FILE):
        assert model_folder.is_model_folder(source)
        assert torch.equal(_outputs(load_generator(source, device="cpu"))[1], _outputs(G1)[1])


def _truncate_weights(entry: Path) -> None:
    weights = entry / cache.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])


def _garbage_config(entry: Path) -> None:
    (entry / cache.CONFIG_FILE).write_text("{not json")


def _wrong_tensors(entry: Path) -> None:
    safetensors.torch.save_file({"mapping.w_avg": torch.zeros(3)}, str(entry / cache.WEIGHTS_FILE))


def _wrong_hash(entry: Path) -> None:
    config = json.loads((entry / cache.CONFIG_FILE).read_text())
    config["sha256"] = "0" * 64
    (entry / cache.CONFIG_FILE).write_text(json.dumps(config))


@pytest.mark.parametrize("corrupt", [_truncate_weights, _garbage_config, _wrong_tensors, _wrong_hash])
def test_corrupt_cache_entry_is_ignored_and_rebuilt(env, corrupt) -> None:
    source = fixture_path(f"{TINY}.pkl")
    G1 = load_generator(source, device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(source)
    corrupt(entry)
    with pytest.warns(UserWarning, match="broken converted-model cache"):
        G2 = load_generator(source, device="cpu")
    assert torch.equal(_outputs(G1)[1], _outputs(G2)[1])
    assert torch.equal(_outputs(checkpoints.load_converted(entry))[1], _outputs(G1)[1])


def test_saving_keeps_a_concurrent_entry_but_replaces_one_that_failed(env) -> None:
    source = fixture_path(f"{TINY}.pkl")
    G = load_generator(source, device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(source)
    (entry / "marker").write_text("another process wrote this entry")
    assert cache.save(G, builders.generator_config(G), source, entry.name) == entry
    assert (entry / "marker").is_file()
    cache.save(G, builders.generator_config(G), source, entry.name, replace=True)
    assert not (entry / "marker").exists() and model_folder.is_model_folder(entry)
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(model_folder.TMP_PREFIX)]


def test_cache_is_found_by_content_after_the_file_moves(env, monkeypatch) -> None:
    load_generator(fixture_path(f"{TINY}.pkl"), device="cpu")
    moved = env / "renamed.bin"
    shutil.copyfile(fixture_path(f"{TINY}.pkl"), moved)
    _refuse_pickles(monkeypatch)
    assert load_generator(moved, device="cpu").img_resolution == 64


def test_use_cache_false_writes_nothing(env) -> None:
    load_generator(fixture_path(f"{TINY}.pkl"), device="cpu", use_cache=False)
    assert not cache.converted_cache_dir().exists()


def test_dispatch_is_by_content_not_file_name(env, monkeypatch) -> None:
    misleading = env / "stylegan2-car-config-f.pkl"
    shutil.copyfile(fixture_path(f"{TINY}.pkl"), misleading)
    assert load_generator(misleading, device="cpu", use_cache=False).img_resolution == 64

    import draggan.checkpoints.tf_pickle as tf_pickle
    seen = []

    def fake_generator_from_tf(Gs):
        seen.append(Gs)
        return load_generator(fixture_path(f"{TINY}.pkl"), device="cpu", use_cache=False)

    monkeypatch.setattr(tf_pickle, "generator_from_tf", fake_generator_from_tf)
    tf_named_like_torch = env / "stylegan2-ffhq-512x512.pkl"
    shutil.copyfile(fixture_path("stylegan2-tf-tiny-64.pkl"), tf_named_like_torch)
    load_generator(tf_named_like_torch, device="cpu", use_cache=False)
    (Gs,) = seen
    assert isinstance(Gs, checkpoints.TFNetwork) and "synthesis" in Gs.components


def test_unreadable_inputs_give_friendly_errors(env) -> None:
    text = env / "notes.pkl"
    text.write_text("just text")
    with pytest.raises(ModelFormatError, match=r"notes\.pkl is not a readable network pickle"):
        load_generator(text)
    no_generator = env / "empty.pkl"
    no_generator.write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(ModelFormatError, match=r"empty\.pkl holds no generator"):
        load_generator(no_generator)
    folder = env / "folder"
    folder.mkdir()
    with pytest.raises(ModelFormatError, match="not a converted model"):
        load_generator(folder)


def test_default_device_prefers_cuda_then_mps_then_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")


def test_zoo_entry_is_accepted_as_a_source(env) -> None:
    entry = ZooEntry(key="x", name="X", format="nvidia-pickle", family="stylegan2", resolution=(64, 64),
                     path=f"{TINY}.pkl", base_dir=fixture_path(".").resolve())
    assert load_generator(entry, device="cpu").img_resolution == 64


def test_tensors_missing_from_the_file_get_a_normal_initialisation(env, monkeypatch) -> None:
    load_generator(fixture_path(f"{TINY}.pkl"), device="cpu")
    entry = cache.converted_cache_dir() / cache.file_sha256(fixture_path(f"{TINY}.pkl"))
    builds = []

    instantiate = builders._instantiate

    def build_with_unsaved_buffer(family, init_kwargs):
        G = instantiate(family, init_kwargs)
        G.register_buffer("unsaved", torch.rand(1000), persistent=False)
        builds.append(G)
        return G

    monkeypatch.setattr(builders, "_instantiate", build_with_unsaved_buffer)
    G = checkpoints.load_converted(entry)
    assert len(builds) == 2 and G is builds[1]
    assert 0 <= G.unsaved.min() and G.unsaved.max() < 1 and G.unsaved.std() > 0.2


def test_download_progress_reaches_the_callback(env, monkeypatch) -> None:
    def download_with_bar(**kwargs):
        bar = kwargs["tqdm_class"](total=300, file=io.StringIO())
        for _ in range(3):
            bar.update(100)
        bar.close()
        return str(fixture_path(f"{TINY}.pkl"))

    _online(monkeypatch, DownloadRecorder())
    monkeypatch.setattr(hub, "hf_hub_download", download_with_bar)
    seen = []
    hub.resolve_source("hf://DragGan/DragGan-Models/stylegan2_horses_256_pytorch.pkl",
                       progress=lambda done, total: seen.append((done, total)))
    assert seen == [(100, 300), (200, 300), (300, 300)]


def test_hub_probe_uses_the_configured_endpoint_locally(monkeypatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable(timeout=2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    assert not hub.hub_reachable(timeout=2)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub.hub_reachable(timeout=2)
