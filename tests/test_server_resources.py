"""Server resources: one job per visitor, the thread policy, the session reaper, the temp folder, trimming."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from draggan import settings
from draggan.errors import UserError
from draggan.service import handlers
from draggan.server import memory, tempdir
from draggan.app.events import unchanged
from draggan.server.sessions import sweep
from draggan.server.threads import _cgroup_quota, thread_policy, usable_cores
from draggan.server.visitors import Visitors, client_address, visitor_keys

DATA = Path(__file__).parent / "data"
SG2 = DATA / "stylegan2-tiny-64.pkl"


def request(host: str | None, session: str | None = "s1", forwarded: str | None = None):
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers, session_hash=session)


# ------------------------------------------------------------------ visitors

def test_forwarded_header_counts_only_behind_a_private_proxy() -> None:
    assert client_address(request("10.0.0.7", forwarded="93.184.216.5, 10.0.0.7")) == "93.184.216.5"
    assert client_address(request("127.0.0.1", forwarded="93.184.215.1")) == "93.184.215.1"
    assert client_address(request("93.184.216.9", forwarded="1.2.3.4")) == "93.184.216.9", "a public peer's header"
    assert client_address(request("10.0.0.7")) == "10.0.0.7"
    assert client_address(None) is None and visitor_keys(None) == ()
    assert visitor_keys(request("93.184.216.9", "abc")) == ("session:abc", "address:93.184.216.9")


def test_one_job_per_visitor_by_session_and_by_address() -> None:
    visitors = Visitors()
    with visitors.claim(request("93.184.216.1", "tab-1"), "a drag"):
        with pytest.raises(UserError, match="already have a drag running.*another tab"):
            visitors.claim(request("93.184.216.1", "tab-2"), "a photo inversion")   # same address, new tab
        with pytest.raises(UserError, match="already have a drag"):
            visitors.claim(request("93.184.216.2", "tab-1"), "a drag")              # same session
        with visitors.claim(request("93.184.216.2", "tab-3"), "a drag"):            # someone else
            assert len(visitors.running()) == 4
        assert visitors.claim(None, "a drag").keys == ()                            # in-process: never refused
    assert visitors.running() == {}
    slot = visitors.claim(request("93.184.216.1", "tab-2"), "a drag")
    slot.release()
    slot.release()
    assert visitors.running() == {}


def test_a_failing_job_gives_its_slot_back() -> None:
    visitors = Visitors()
    with pytest.raises(RuntimeError):
        with visitors.claim(request("93.184.216.1"), "a drag"):
            raise RuntimeError("boom")
    visitors.claim(request("93.184.216.1"), "a drag").release()


def test_claims_are_atomic_under_threads() -> None:
    visitors, won, barrier = Visitors(), [], threading.Barrier(16)

    def grab() -> None:
        barrier.wait()
        try:
            won.append(visitors.claim(request("93.184.216.1", session=None), "a drag"))
        except UserError:
            pass

    threads = [threading.Thread(target=grab) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(won) == 1


@pytest.fixture()
def demo(monkeypatch, tmp_path):
    import gradio as gr

    from _app_server import build_app

    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(str(msg)))
    monkeypatch.setattr(gr, "Info", lambda msg, *a, **k: None)
    d = build_app(monkeypatch, tmp_path)
    d.warnings = warnings
    return d


def test_a_second_tab_of_a_visitor_is_refused_while_its_drag_runs(demo) -> None:
    page, panels = demo.page, demo.panels
    tabs = [panels.model.init_session(None, s, 0.7, "w+", 1e-3, 1000, 1, 20.0, progress=None)[page.state]
            for s in (0, 1)]
    for ui in tabs:
        ui.snap = handlers.snapshots.set_points(ui.snap, ((20.0, 20.0),), ((40.0, 30.0),))
    first = panels.drag.start(tabs[0], request("93.184.216.1", "tab-1"))
    next(first)                                    # the drag runs and holds the visitor's slot
    assert tabs[0].running
    assert list(panels.drag.start(tabs[1], request("93.184.216.1", "tab-2"))) == []
    assert "already have a drag running" in demo.warnings[-1] and not tabs[1].running
    assert list(panels.photo.invert_photo(tabs[1], None, False, 1, 0, 0, request=request("93.184.216.1", "tab-2"))) == []
    assert "already have a drag running" in demo.warnings[-1]
    tabs[0].job.stop.set()                         # Stop (the press waits for a drag that runs in a thread)
    list(first)
    assert demo.panels.drag.studio.visitors.running() == {}
    model_before = tabs[1].model
    with panels.drag.studio.visitors.claim(request("93.184.216.1", "tab-3"), "a drag"):
        assert panels.model.load_own_model(tabs[1], str(SG2), "", 0, 0.7, "w+", None,
                                           request("93.184.216.1", "tab-2")) == unchanged()
        assert "already have a drag running" in demo.warnings[-1] and tabs[1].model == model_before
    other = panels.drag.start(tabs[1], request("93.184.216.1", "tab-2"))
    next(other)
    assert tabs[1].running
    tabs[1].job.stop.set()
    list(other)
    for ui in tabs:
        handlers.release(ui)


# ------------------------------------------------------------------ thread policy

def test_thread_policy_keeps_jobs_times_threads_within_the_cores(monkeypatch) -> None:
    plain = settings.Settings.from_env({})
    assert thread_policy("cpu", cores=2, config=plain) == thread_policy("cpu", 2, plain)
    p = thread_policy("cpu", cores=2, config=plain)
    assert (p.concurrency, p.threads) == (2, 1)
    p = thread_policy("cpu", cores=16, config=plain)
    assert (p.concurrency, p.threads) == (2, 8)
    p = thread_policy("cuda", cores=16, config=plain)
    assert (p.concurrency, p.threads) == (4, 4)
    p = thread_policy("cpu", cores=1, config=plain)
    assert p.concurrency * p.threads <= 1
    fixed = settings.Settings.from_env({"DRAGGAN_TORCH_THREADS": "2", "DRAGGAN_CONCURRENCY": "4"})
    p = thread_policy("cpu", cores=4, config=fixed)
    assert (p.concurrency, p.threads) == (2, 2)
    with pytest.raises(settings.SettingsError, match="DRAGGAN_TORCH_THREADS"):
        settings.Settings.from_env({"DRAGGAN_TORCH_THREADS": "0"})


def test_cgroup_quota_bounds_the_cores(tmp_path) -> None:
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert _cgroup_quota(tmp_path) == 2.0 and usable_cores(tmp_path) <= 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert _cgroup_quota(tmp_path) == 1.5 and usable_cores(tmp_path) <= 2
    assert _cgroup_quota(tmp_path / "missing") is None


def test_studio_applies_its_policy(monkeypatch) -> None:
    from draggan.service.studio import Studio

    monkeypatch.setenv("DRAGGAN_TORCH_THREADS", "1")
    settings.reload()
    before = torch.get_num_threads()
    studio = Studio(device="cpu", hub_online=False)
    try:
        studio.apply_thread_policy()
        assert torch.get_num_threads() == 1 == studio.policy.threads
        assert studio.concurrency * studio.policy.threads <= studio.policy.cores
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ sessions and files

def _holder(demo):
    from gradio.state_holder import StateHolder

    holder = StateHolder()
    holder.set_blocks(demo)
    return holder


def test_the_reaper_releases_closed_and_idle_sessions_but_not_busy_ones(demo) -> None:
    page, panels = demo.page, demo.panels
    holder = _holder(demo)
    states = {}
    for sid in ("closed", "idle", "fresh", "busy"):
        ui = panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[page.state]
        holder[sid][page.state._id] = ui
        states[sid] = ui
    from draggan.service.models import shared_cache, store_private_model

    private = store_private_model(shared_cache().get(str(SG2), torch.device("cpu")), "tuned copy")
    states["closed"].model = private                        # a photo session's own generator
    assert Path(private.source).is_dir()
    now = datetime.datetime.now()
    holder.session_data["closed"].is_closed = True
    holder.time_last_used["closed"] = now - datetime.timedelta(seconds=5)
    holder.time_last_used["idle"] = now - datetime.timedelta(seconds=100)
    holder.time_last_used["busy"] = now - datetime.timedelta(seconds=100)
    states["busy"].job = handlers.Job(kind="drag", stop=handlers.StopFlag(str(states["busy"].workdir / "stop")))
    assert sweep(holder, ttl_s=50, closed_ttl_s=2, now=now) == 2
    assert set(holder.session_data) == {"fresh", "busy"} and set(holder.time_last_used) == {"fresh", "busy"}
    for sid in ("closed", "idle"):
        assert not states[sid].workdir.exists() and states[sid].frames == {}
    assert not Path(private.source).exists(), "the closed session's private model is forgotten"
    assert states["fresh"].workdir.is_dir() and states["busy"].workdir.is_dir()
    states["busy"].job = None
    assert sweep(holder, ttl_s=50, closed_ttl_s=2, now=now) == 1
    assert set(holder.session_data) == {"fresh"}
    handlers.release(states["fresh"])


def test_sessions_and_gradio_files_share_one_app_temp_folder(demo, monkeypatch, tmp_path) -> None:
    root = tmp_path / "app-tmp"
    ui = demo.panels.model.init_session(None, 0, 0.7, "w+", 1e-3, 3, 1, 20.0, progress=None)[demo.page.state]
    assert ui.workdir.parent == root / "sessions"
    path = handlers.export_png(ui)
    assert root in path.parents and tempdir.file_count(root) >= 1
    handlers.release(ui)
    assert tempdir.file_count(root / "sessions") == 0
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert tempdir.use_for_gradio() == root / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "operator"))
    assert tempdir.use_for_gradio() == tmp_path / "operator", "an operator's GRADIO_TEMP_DIR wins"
    monkeypatch.setenv("DRAGGAN_FILE_TTL_S", "5")
    settings.reload()
    assert tempdir.delete_cache_policy() == (5, 5)


def test_trim_memory_is_safe_to_call() -> None:
    assert memory.trim_memory() in (True, False)


def test_age_out_deletes_old_unkept_files_and_empty_folders(tmp_path) -> None:
    import os

    for name in ("a/old.webp", "b/kept.webp", "c/new.webp"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_bytes(b"x")
    now = os.lstat(tmp_path / "a/old.webp").st_ctime + 100
    keep = {str(tmp_path / "b/kept.webp")}
    assert tempdir.age_out(tmp_path, 50, keep, now=now - 100) == 0           # nothing is old yet
    assert tempdir.age_out(tmp_path, 50, keep, now=now) == 2                 # old.webp and new.webp
    assert (tmp_path / "b/kept.webp").exists() and not (tmp_path / "a").exists()
