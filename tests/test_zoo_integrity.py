"""Zoo pins (revision, SHA-256, licence), refusal of files with other content, offline wording, and the
default-model policy. The network boundary (`hf_hub_download`, the Hub probe) is mocked; nothing is fetched."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from draggan.checkpoints import ModelIntegrityError, ModelUnavailableError, hub
from draggan.checkpoints.default_model import DEFAULT_MODEL_ENV, default_model
from draggan.checkpoints.licences import LICENCES, licence_notice
from draggan.checkpoints.zoo import ZOO_PATH, ZooEntry, get_model, list_models
from draggan.cli import main
from draggan.errors import ZooError

REPO = "DragGan/DragGan-Models"
MAIN_COMMIT = "bcc1b7559bc7038004397648530eff423e43074d"
# Download sizes (MB) as the Hub's DragGan-Models tree and blob pages show them.
HUB_SIZES_MB = {"ffhq-512": 364, "ffhq-1024": 382, "afhqcat-512": 364, "lions-512": 364, "dogs-1024": 382,
                "elephants-512": 364, "horses-256": 357, "car-512": 364, "cat-256": 357, "human-512": 353,
                "lhq-256": 357}


@pytest.fixture
def env(monkeypatch, tmp_path) -> Path:
    """Private Hub cache, online but every network call must be mocked by the test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy",
                 "ALL_PROXY", "all_proxy", DEFAULT_MODEL_ENV, "SPACES_ZERO_GPU"):
        monkeypatch.delenv(name, raising=False)

    def no_download(**kwargs):
        raise AssertionError("unexpected download")

    monkeypatch.setattr(hub, "hf_hub_download", no_download)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: True)
    return tmp_path


def _cache_file(root: Path, commit: str, filename: str, content: bytes, blob: str | None = None) -> Path:
    """Lay out a file as huggingface_hub does: snapshots/<commit>/<file> → blobs/<sha256 of content>."""
    repo_dir = root / f"models--{REPO.replace('/', '--')}"
    blob_path = repo_dir / "blobs" / (blob or hashlib.sha256(content).hexdigest())
    blob_path.parent.mkdir(parents=True, exist_ok=True)
    blob_path.write_bytes(content)
    link = repo_dir / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("../..") / "blobs" / blob_path.name)
    return link


def _pinned(key: str, content: bytes) -> ZooEntry:
    """The zoo entry `key`, with its SHA-256 pin replaced by the hash of `content`."""
    return ZooEntry(**dict(get_model(key).__dict__, sha256=hashlib.sha256(content).hexdigest()))


# ----------------------------------------------------------------------------------------------- registry


def test_every_hub_file_is_pinned_with_its_hub_size_and_licence() -> None:
    hub_entries = [e for e in list_models() if not e.is_local]
    assert {e.key: e.approx_size_mb for e in hub_entries} == HUB_SIZES_MB
    for entry in hub_entries:
        assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.key
        assert entry.revision == (None if entry.key == "ffhq-1024" else MAIN_COMMIT), entry.key
        assert "huggingface.co" in entry.notes, f"{entry.key}: notes must cite the page the pins came from"
    assert len({e.sha256 for e in hub_entries}) == len(hub_entries)
    ffhq1024 = get_model("ffhq-1024")
    assert (ffhq1024.filename, ffhq1024.resolution) == ("stylegan2-ffhq1024x1024.pkl", (1024, 1024))
    for entry in list_models():
        assert entry.licence in LICENCES, entry.key
        expected = "mit" if entry.is_local else None
        assert expected is None or entry.licence == expected


def test_licence_notice_says_whether_commercial_use_is_allowed() -> None:
    assert "not for commercial use" in licence_notice(get_model("ffhq-512"))
    assert "NVIDIA Source Code License-NC" in licence_notice(get_model("ffhq-1024"))
    assert "commercial use allowed" in licence_notice(get_model("cartoon-faces-128"))
    assert "not for commercial use" in licence_notice(get_model("human-512"))


BASE = dict(key="hub-a", name="A", repo_id="o/r", filename="a.pkl", format="nvidia-pickle", family="stylegan2",
            resolution=[64, 64])


@pytest.mark.parametrize("change, field", [
    (dict(sha256="abc"), "sha256"),
    (dict(sha256="D2B1C92F41CE8A64C55F7A75EF06C4C0EEF9E17B1EB29AAE8C10FB37B3E60478"), "sha256"),
    (dict(revision="main"), "revision"),
    (dict(revision="2fcdd50"), "revision"),
    (dict(licence="gpl"), "licence"),
    (dict(repo_id=None, filename=None, path="x", sha256="0" * 64), "sha256"),
])
def test_malformed_pins_are_rejected_naming_the_field(tmp_path, change, field) -> None:
    raw = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    zoo = tmp_path / "zoo.json"
    zoo.write_text(json.dumps({"format_version": 1, "models": [raw]}))
    with pytest.raises(ZooError, match=rf"'hub-a': {field} must"):
        list_models(zoo)


def test_the_shipped_registry_is_valid_json_with_sources_cited() -> None:
    data = json.loads(ZOO_PATH.read_text(encoding="utf-8"))
    assert MAIN_COMMIT in data["description"] and "commits/main" in data["description"]


# ----------------------------------------------------------------------------------------------- integrity


def test_a_download_with_another_sha256_is_refused_and_removed(env, monkeypatch) -> None:
    entry = get_model("cat-256")
    calls = []

    def download(**kwargs):
        calls.append(kwargs)
        return str(_cache_file(Path(kwargs["cache_dir"]), kwargs["revision"], kwargs["filename"], b"tampered"))

    monkeypatch.setattr(hub, "hf_hub_download", download)
    with pytest.raises(ModelIntegrityError, match=r"stylegan2-cat-config-f\.pkl.*refused.*SHA-256.*removed"):
        hub.resolve_source("cat-256")
    (call,) = calls
    assert call["revision"] == MAIN_COMMIT and call["filename"] == entry.filename
    repo_dir = env / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"
    assert not list((repo_dir / "blobs").iterdir()), "the refused blob must be deleted"
    assert not (repo_dir / "snapshots" / MAIN_COMMIT / entry.filename).exists()
    assert not hub.is_available_offline(entry)
    assert isinstance(ModelIntegrityError("x"), ModelUnavailableError), "callers catching unavailable still work"


def test_a_download_with_the_pinned_sha256_is_returned(env, monkeypatch) -> None:
    entry = _pinned("cat-256", b"the real weights")
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: str(
        _cache_file(Path(kw["cache_dir"]), kw["revision"], kw["filename"], b"the real weights")))
    path = hub.resolve_source(entry)
    assert path.read_bytes() == b"the real weights" and hub.is_available_offline(entry)


def test_a_refused_file_outside_the_hub_cache_is_not_deleted(env, monkeypatch, tmp_path) -> None:
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes(b"not the model")
    monkeypatch.setattr(hub, "hf_hub_download", lambda **kw: str(outside))
    with pytest.raises(ModelIntegrityError, match="left where it is"):
        hub.resolve_source("lhq-256")
    assert outside.read_bytes() == b"not the model"


def test_a_cached_file_with_another_sha256_is_removed_and_not_offered(env, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    link = _cache_file(env / "hf" / "hub", MAIN_COMMIT, "stylegan2-ffhq-512x512.pkl", b"corrupt")
    assert not hub.is_available_offline(get_model("ffhq-512"))
    assert not link.exists() and not link.is_symlink()


def test_a_file_cached_at_main_is_found_for_the_pinned_revision_by_its_blob_hash(env, monkeypatch) -> None:
    """`preload_from_hub` downloads at main; the pinned entry must still find it without any network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = _pinned("ffhq-512", b"preloaded weights")
    repo_dir = env / "hf" / "hub" / f"models--{REPO.replace('/', '--')}"
    link = _cache_file(env / "hf" / "hub", "f" * 40, entry.filename, b"preloaded weights")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("f" * 40)
    assert hub.is_available_offline(entry) and hub.resolve_source(entry) == link
    other = _pinned("ffhq-512", b"something else")
    assert not hub.is_available_offline(other), "another pinned hash must not match this blob"


# ----------------------------------------------------------------------------------------------- messages


def test_offline_error_says_offline_mode_is_on_not_connect_to_the_internet(env, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        hub.resolve_source("ffhq-512")
    message = str(info.value)
    assert "Offline mode is on (HF_HUB_OFFLINE=1)" in message and "stylegan2-ffhq-512x512.pkl" in message
    assert "connect to the internet" not in message.lower()
    assert str(env) not in message, "no server paths in user-facing messages"


def test_unreachable_hub_error_does_not_blame_offline_mode(env, monkeypatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: False)
    with pytest.raises(ModelUnavailableError, match="cannot be reached") as info:
        hub.resolve_source("ffhq-512")
    assert "Offline mode is on" not in str(info.value)


def _models_rows(capsys) -> dict[str, str]:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line for line in lines[1:] if line.strip() and not line.startswith("Hub cache")}


def test_models_command_says_unavailable_offline_or_not_reachable(env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = _models_rows(capsys)
    assert "unavailable offline" in rows["ffhq-1024"] and "download needed" not in rows["ffhq-1024"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: probes.append(1) or False)
    rows = _models_rows(capsys)
    assert all("not reachable" in rows[key] for key in HUB_SIZES_MB) and len(probes) == 1
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: True)
    assert "download needed" in _models_rows(capsys)["lions-512"]


# ----------------------------------------------------------------------------------------------- default model


def test_the_setting_names_the_start_model() -> None:
    assert default_model({DEFAULT_MODEL_ENV: " lions-512 "}, hub_online=False, cached=False) == "lions-512"


@pytest.mark.parametrize("env_vars, hub_online, cached, expected", [
    ({}, True, False, "ffhq-512"),
    ({}, False, True, "ffhq-512"),
    ({}, False, False, "cartoon-faces-128"),
    ({"SPACES_ZERO_GPU": "true"}, True, False, "ffhq-512"),
    ({DEFAULT_MODEL_ENV: ""}, True, True, "ffhq-512"),
    ({DEFAULT_MODEL_ENV: "cartoon-faces-64"}, True, True, "cartoon-faces-64"),
])
def test_every_tier_with_the_hub_or_a_cached_file_starts_on_ffhq_else_the_bundled_model(env_vars, hub_online,
                                                                                        cached, expected) -> None:
    assert default_model(env_vars, hub_online=hub_online, cached=cached) == expected


def test_default_model_finds_out_cache_and_hub_itself_only_when_needed(env, monkeypatch) -> None:
    """No answers given: the Hub cache is read (a file put where `hf_hub_download` would have put it counts,
    as on a Space whose card preloads it), and the Hub probed only when the file is not cached."""
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: probes.append(1) or False)
    assert default_model({}) == "cartoon-faces-128" and probes == [1]
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: True)
    assert default_model({}) == "ffhq-512"

    entry = get_model("ffhq-512")
    ref = hub.entry_ref(entry)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=None: probes.append(1) or False)
    monkeypatch.setattr(hub, "_content_matches", lambda path, sha256: True)   # a stand-in for the 360 MB file
    repo = Path(hub.hub_cache_dir()) / f"models--{ref.repo_id.replace('/', '--')}"
    (repo / "snapshots" / ref.revision).mkdir(parents=True)
    (repo / "snapshots" / ref.revision / ref.filename).write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(ref.revision)
    probes.clear()
    assert default_model({}) == "ffhq-512" and probes == [], "a cached file needs no probe"


def test_the_space_card_preloads_the_default_model_at_the_pinned_revision() -> None:
    import yaml

    readme = (ZOO_PATH.parents[1] / "README.md").read_text(encoding="utf-8")
    card = yaml.safe_load(readme.split("---")[1])
    entry = get_model("ffhq-512")
    assert f"{entry.repo_id} {entry.filename} {entry.revision}" in card["preload_from_hub"]


def test_requirements_ask_for_the_gradio_major_the_app_uses() -> None:
    from importlib.metadata import version

    from packaging.requirements import Requirement

    lines = (ZOO_PATH.parents[1] / "requirements.txt").read_text(encoding="utf-8").splitlines()
    (spec,) = [Requirement(line.split("#")[0]) for line in lines if line.startswith("gradio")]
    assert "5.50.0" not in spec.specifier and "7.0.0" not in spec.specifier
    assert version("gradio") in spec.specifier


def test_licence_markdown_lists_one_line_per_model() -> None:
    from draggan.checkpoints.licences import licence_markdown

    entries = list_models()
    lines = licence_markdown(entries).splitlines()
    assert len(lines) == len(entries) and all(line.startswith("- ") for line in lines)
    assert sum("not for commercial use" in line for line in lines) == len([e for e in entries if not e.is_local])
