"""`draggan.settings`: every DRAGGAN_* variable in one validated object, read once, reloadable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from draggan import settings
from draggan.checkpoints import cache, hub
from draggan.errors import DragGANError, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_without_environment() -> None:
    s = settings.Settings.from_env({})
    assert s == settings.Settings()
    assert (s.model_cache, s.max_upload_mb, s.hub_timeout, s.max_photo_mp) == (2, 2048.0, 3.0, 50.0)
    assert (s.gpu_duration, s.gpu_invert_duration, s.cache_dir, s.extra_models) == (120, 600, None, "")
    assert (s.concurrency_for("cuda"), s.concurrency_for("cpu")) == (4, 2)


def test_values_are_parsed_and_empty_means_default() -> None:
    s = settings.Settings.from_env({"DRAGGAN_CONCURRENCY": " 3 ", "DRAGGAN_HUB_TIMEOUT": "0.5",
                                    "DRAGGAN_CACHE": "~/conv", "DRAGGAN_MODEL_CACHE": "",
                                    "DRAGGAN_EXTRA_MODELS": "A=/x.pkl"})
    assert s.concurrency_for("cuda") == 3 and s.hub_timeout == 0.5 and s.model_cache == 2
    assert s.cache_dir == Path("~/conv").expanduser() and s.extra_models == "A=/x.pkl"


@pytest.mark.parametrize("name, value", [("DRAGGAN_CONCURRENCY", "many"), ("DRAGGAN_CONCURRENCY", "0"),
                                         ("DRAGGAN_MODEL_CACHE", "1.5"), ("DRAGGAN_HUB_TIMEOUT", "nan"),
                                         ("DRAGGAN_MAX_UPLOAD_MB", "-1"), ("DRAGGAN_GPU_DURATION", "99999")])
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name} must be .*, got {re.escape(repr(value))}$") as info:
        settings.Settings.from_env({name: value})
    assert isinstance(info.value, DragGANError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("raw, on", [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False),
                                     ("false", False), ("No", False), ("off", False), ("", False), (None, False)])
def test_one_flag_parser_reads_the_documented_words(raw, on, monkeypatch) -> None:
    assert settings.parse_flag("DRAGGAN_FORKED_GPU", raw) is on
    assert settings.Settings.from_env({"DRAGGAN_FORKED_GPU": raw or ""}).forked_gpu is on
    for name in settings.PLATFORM_FLAGS:
        if raw is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, raw)
        assert settings.flag(name) is on
    if raw is not None:
        assert hub.is_offline() is on, "HF_HUB_OFFLINE is read by the same parser"


@pytest.mark.parametrize("name", ["DRAGGAN_FORKED_GPU", *settings.PLATFORM_FLAGS])
def test_any_other_flag_word_stops_the_start_naming_the_variable(name, monkeypatch) -> None:
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(SettingsError, match=rf"^{name} must be one of 1, true, yes, on \(on\) or 0, false, no, off "
                                            rf"\(off\), got 'maybe'$"):
        settings.reload()
    monkeypatch.delenv(name)
    settings.reload()


def test_settings_are_read_when_used(monkeypatch) -> None:
    """The GPU grants follow `reload()` (nothing is read at import), and the default model has one reader."""
    from draggan.checkpoints.default_model import default_model
    from draggan.service import gpu

    monkeypatch.setenv("DRAGGAN_GPU_DURATION", "77")
    monkeypatch.setenv("DRAGGAN_GPU_INVERT_DURATION", "88")
    monkeypatch.setenv("DRAGGAN_DEFAULT_MODEL", " lions-512 ")
    settings.reload()
    try:
        assert gpu.DRAG_SECONDS == gpu.drag_grant() == 77 and gpu.invert_grant() == 88
        assert gpu.drag_seconds(None, "cpu", None, 10, None, float("inf")) == 77
        assert default_model() == "lions-512"
        with pytest.raises(SettingsError, match="DRAGGAN_DEFAULT_MODEL|DRAGGAN_GPU_DURATION"):
            default_model({"DRAGGAN_GPU_DURATION": "never"})
    finally:
        monkeypatch.undo()
        settings.reload()


def test_read_once_until_reload(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = settings.get()
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "conv"))
    monkeypatch.setenv("DRAGGAN_HUB_TIMEOUT", "0.25")
    assert settings.get() is first
    reloaded = settings.reload()
    assert reloaded is settings.get() and reloaded.cache_dir == tmp_path / "conv"
    assert cache.converted_cache_dir() == tmp_path / "conv"
    seen = []
    monkeypatch.setattr(hub.socket, "create_connection", lambda addr, timeout: seen.append(timeout) or _Closing())
    monkeypatch.setattr(hub, "_endpoint", lambda: "https://hub.invalid")
    for name in hub._PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    assert hub.hub_reachable()
    assert seen == [0.25]


class _Closing:
    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_every_draggan_variable_is_a_field_and_documented() -> None:
    """No module reads a DRAGGAN_* variable itself, and docs/app.md lists each field."""
    names = set(settings.env_names())
    assert len(names) == len(settings.env_names())
    for path in (ROOT / "draggan").rglob("*.py"):
        if path.name == "settings.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"environ(\.get)?\s*[\[(]\s*['\"]DRAGGAN_", text), f"{path.name} reads DRAGGAN_* itself"
    for path in (ROOT / "draggan").rglob("*.py"):
        for name in re.findall(r"DRAGGAN_[A-Z_]+", path.read_text(encoding="utf-8")):
            assert name.rstrip("_") in names | {"DRAGGAN"}, f"{path.name} uses {name}, which Settings lacks"
    docs = (ROOT / "docs" / "app.md").read_text(encoding="utf-8")
    for name in names:
        assert f"`{name}`" in docs, f"docs/app.md does not document {name}"


def test_cli_reports_a_bad_variable_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    from draggan import cli

    monkeypatch.setenv("DRAGGAN_MODEL_CACHE", "lots")
    assert cli.main(["models"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err == "error: DRAGGAN_MODEL_CACHE must be an integer between 1 and 64, got 'lots'\n"
