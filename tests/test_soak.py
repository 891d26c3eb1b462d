"""A short soak of the launched app: a few visitors (distinct addresses) open tabs, click, drag, export,
download and close them, over Gradio's own HTTP protocol. Afterwards: no errors, every ended session released
(Gradio's session table empty, its folder deleted, no job slot held), and the temp files back to their count
before the first visit. The long version with memory figures is `python -m bench.soak`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from draggan import settings

ROOT = Path(__file__).resolve().parents[1]
SG2 = ROOT / "tests" / "data" / "stylegan2-tiny-64.pkl"
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
    for name, value in {"DRAGGAN_EXTRA_MODELS": f"Tiny={SG2}", "DRAGGAN_TEMP_DIR": str(temp),
                        "GRADIO_TEMP_DIR": str(temp / "gradio"), "DRAGGAN_CLOSED_SESSION_TTL_S": "0",
                        "DRAGGAN_SESSION_TTL_S": "600", "DRAGGAN_FILE_TTL_S": "2", "DRAGGAN_CONCURRENCY": "3",
                        "GRADIO_HEARTBEAT_INTERVAL": "0.25", "GRADIO_ANALYTICS_ENABLED": "False",
                        "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app
    from bench.soak import free_port
    from draggan.ui.studio import Studio

    settings.reload()
    studio = Studio(device="cpu", hub_online=False)
    demo = app.build_demo(studio)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo, studio, temp
    finally:
        demo.reaper.stop()
        demo.close()


def test_a_short_soak_leaves_no_sessions_and_no_files(launched) -> None:
    from bench.soak import event_indices, soak, trigger_ids
    from draggan.ui.tempdir import file_count

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
