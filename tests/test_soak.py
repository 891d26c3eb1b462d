"""A short soak of the launched app: a few visitors (distinct addresses) open tabs, click, drag, export,
download and close them, over Gradio's own HTTP protocol. Afterwards: no errors, every ended session released
(Gradio's session table empty, its folder deleted, no job slot held), and the temp files back to their count
before the first visit. The long version with memory figures is `python -m bench.soak`."""

from __future__ import annotations

import time

import pytest

from _app_server import FIXTURE_MODELS, launched_app

SG2 = FIXTURE_MODELS["Tiny StyleGAN2"]
CLIENTS, VISITS = 3, 2


def _wait_for(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


@pytest.fixture()
def launched(monkeypatch, tmp_path):
    temp = tmp_path / "app-tmp"
    env = {"DRAGGAN_EXTRA_MODELS": f"Tiny={SG2}", "DRAGGAN_TEMP_DIR": str(temp), "GRADIO_TEMP_DIR": str(temp / "gradio"),
           "DRAGGAN_CLOSED_SESSION_TTL_S": "0", "DRAGGAN_SESSION_TTL_S": "600", "DRAGGAN_FILE_TTL_S": "2",
           "DRAGGAN_CONCURRENCY": "3", "GRADIO_HEARTBEAT_INTERVAL": "0.25"}
    with launched_app(monkeypatch, env) as (url, demo):
        yield url, demo, demo.panels.model.studio, temp


def test_a_short_soak_leaves_no_sessions_and_no_files(launched) -> None:
    from bench.soak import event_indices, soak, trigger_ids
    from draggan.server.tempdir import file_count

    url, demo, studio, temp = launched
    files_before = file_count(temp)
    stats = soak(url, event_indices(demo), trigger_ids(demo), str(SG2), CLIENTS, seconds=50, steps=3,
                 max_visits=VISITS)
    summary = stats.summary()
    assert summary["errors"] == 0, summary["first_errors"]
    assert summary["visits"] == CLIENTS * VISITS
    assert summary["latency_s"]["drag"]["n"] == CLIENTS * VISITS and summary["latency_s"]["download"]["n"] > 0
    holder = demo.state_holder
    assert _wait_for(lambda: not holder.session_data), f"{len(holder.session_data)} sessions kept"
    assert _wait_for(lambda: demo.reaper.released >= CLIENTS * VISITS), demo.reaper.released
    assert demo.reaper.errors == []
    assert not list((temp / "sessions").glob("s-*")), "a released session's folder is left"
    assert studio.visitors.running() == {}
    assert _wait_for(lambda: file_count(temp) == files_before), \
        f"temp files {files_before} -> {file_count(temp)}"
