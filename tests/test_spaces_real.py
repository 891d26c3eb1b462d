"""The app's GPU functions under the real `spaces` package in ZeroGPU mode, against a local device service.

`tests/_spaces_client.py` runs in a subprocess with `SPACES_ZERO_GPU=true` and `SPACES_ZERO_DEVICE_API_URL` set
to `tests/_zerogpu_service.py` (a stand-in of ZeroGPU's scheduler on 127.0.0.1), so `draggan.service.gpu`'s
functions are spaces' own wrappers: scheduled, run in a forked worker the service allowed, released. What came
back must equal the in-process results; a grant that runs out mid-drag (the service ends the worker) and a
refused grant (quota) must reach the visitor as a clear message with the last snapshot kept; the launched app
serves its `/drag` API under spaces, and a visitor past their quota reads spaces' own words about it. The refusal
texts themselves come from spaces' client code, run here against the same stand-in.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from _plain_gpu import GPU_FUNCTIONS, PLAIN
from draggan.engine import snapshot as snapshots
from draggan.service import gpu, handlers
from draggan.service.models import ModelRef, shared_cache

from _zerogpu_service import DeviceService
from test_zerogpu import same

spaces = pytest.importorskip("spaces", reason="the `spaces` package (ZeroGPU) is not installed")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="spaces' worker needs fork()"),
              pytest.mark.filterwarnings("ignore:Error while reading infos from Nvidia driver FS")]

HERE = Path(__file__).parent
SG2 = HERE / "data" / "stylegan2-tiny-64.pkl"
REF = ModelRef(str(SG2), "tiny")
# calls: new_image, drag | follow 1: make_state, chunk 1, chunk 2 ended mid-call | follow 2: ..., chunk 2 refused
# | stop: make_state, the drag | app: /drag (new_image, drag), /drag as a visitor (new_image, drag refused)
SCRIPT = ["ok", "ok", "ok", "ok", "kill=1.0", "ok", "ok", "quota", "ok", "ok", "ok", "ok", "ok", "quota"]


@pytest.fixture(scope="module")
def zero(tmp_path_factory) -> dict:
    """One subprocess for every scenario (importing torch, gradio and spaces is the slow part)."""
    tmp = tmp_path_factory.mktemp("zerogpu")
    cgroup = tmp / "cgroup"
    cgroup.write_text("0::/draggan-test\n")               # what spaces sends as the visitor's cgroup
    out = tmp / "out.pkl"
    with DeviceService(SCRIPT) as service:
        env = dict(os.environ, SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=service.url,
                   ZEROGPU_PROC_SELF_CGROUP_PATH=str(cgroup), ZEROGPU_OFFLOAD_DIR=str(tmp / "offload"),
                   OMP_NUM_THREADS="1", DRAGGAN_FORKED_GPU="0")
        proc = subprocess.Popen([sys.executable, str(HERE / "_spaces_client.py"), str(out), "calls", "follow",
                                 "follow", "stop", "app"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)     # its own process group: spaces' workers included
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        if proc.returncode == 3:
            pytest.skip(stderr.strip().splitlines()[-1])
        assert proc.returncode == 0, stderr[-3000:]
        data = pickle.loads(out.read_bytes())
        data.update(calls=service.calls, killed=service.killed)
    return data


def schedules(calls: list) -> list[dict]:
    return [q for path, q in calls if path == "/schedule"]


def test_spaces_wraps_every_gpu_function_and_schedules_each_call(zero):
    assert zero["wrapped"] == sorted(GPU_FUNCTIONS), "every GPU function is a spaces.GPU wrapper in ZeroGPU mode"
    paths = [path for path, _ in zero["calls"]]
    assert paths[:6] == ["/schedule", "/allow", "/release"] * 2
    asked = schedules(zero["calls"])
    assert len(asked) == len(SCRIPT)
    durations = [int(q["durationSeconds"]) for q in asked]
    assert durations[:2] == [gpu.DRAG_SECONDS] * 2, "an unbounded call asks for the whole configured grant"
    assert all(0 < d <= gpu.DRAG_SECONDS for d in durations) and min(durations) < gpu.DRAG_SECONDS, \
        "a drag's chunks ask for their budget plus start-up (the last one for the steps it has left)"
    assert asked[0]["cgroupPath"] == "/draggan-test"
    allowed = [int(q["pid"]) for path, q in zero["calls"] if path == "/allow"]
    assert len(set(allowed)) == len(allowed), "each call ran in its own forked worker"


def test_new_image_and_drag_equal_the_in_process_results(zero):
    shared_cache().get(REF.source, torch.device("cpu"))
    remote = zero["results"][0]
    config = handlers.make_config(lr=5e-3, max_steps=6)
    local_snap, local_image = PLAIN["new_image"](REF, "cpu", 3, 0.7, config)
    same((local_snap, local_image), remote["new_image"])
    moved = snapshots.set_points(local_snap, [(20, 20)], [(34, 28)])
    local = list(PLAIN["drag"](REF, "cpu", moved, 5, None, float("inf"), 2))
    assert [u.step for u in remote["drag"]] == [1, 2, 3, 4, 5] and remote["drag"][-1].end == "limit"
    same(local, remote["drag"])
    assert not np.array_equal(remote["drag"][-1].image, local_image)


def kept(result: dict):
    """The last update that brought a snapshot back, and the updates that came after it (a chunk cut short)."""
    updates = result["updates"]
    last = max(i for i, u in enumerate(updates) if u.snapshot is not None)
    return updates[last], updates[last + 1:]


def test_a_grant_ending_mid_drag_keeps_the_last_snapshot_and_says_so(zero):
    result = zero["results"][1]
    assert len(zero["killed"]) == 1, "the service ended the worker of the third drag call"
    last, cut = kept(result)
    assert last.end == "budget" and last.snapshot.steps > 0
    assert result["error"] is not None and result["error"][0] == "UserError"
    assert "GPU time granted for this step ran out" in result["error"][1] and "press Start" in result["error"][1]
    assert np.array_equal(snapshots.full_latent(result["snap"]), snapshots.full_latent(last.snapshot))
    assert result["snap"].steps == last.snapshot.steps and not result["running"]
    assert cut and all(u.snapshot is None for u in cut), "the cut chunk's steps were seen but not kept"


def test_a_refused_grant_keeps_the_last_snapshot_and_says_so(zero):
    result = zero["results"][2]
    last, cut = kept(result)
    assert last.end == "budget" and result["snap"].steps == last.snapshot.steps and not cut
    assert np.array_equal(snapshots.full_latent(result["snap"]), snapshots.full_latent(last.snapshot))
    kind, text = result["error"]
    assert kind == "UserError" and text.startswith("No GPU time now")
    assert "Space app has reached its GPU limit" in text and "press Start" in text


def test_stop_reaches_the_spaces_worker(zero):
    result = zero["results"][3]
    last = result["updates"][-1]
    assert last.end == "stopped" and 3 <= last.step < 500 and not result["running"]   # goal: 2000 steps
    assert result["snap"].drags()[-1].steps == last.step, "the stopped drag is one history entry, kept"


def test_the_launched_app_serves_drag_and_a_visitor_past_quota_reads_why(zero):
    assert [p for p, _ in zero["calls"]].count("/startup-report") == 1, "spaces reported the app's launch"
    (ok, info), (kind, text) = zero["results"][4]["api"]
    assert ok == "ok" and info["steps"] == 4 and info["start_image_changed"]
    assert kind == "AppError" and text.startswith("No GPU time now (You have exceeded your ZeroGPU quota")
    assert "Try again in 0:05:00" in text


# ----------------------------------------------------------------------------------------------------------
# The refusals as spaces' client raises them (in this process, against the stand-in).

@pytest.fixture()
def client(tmp_path, monkeypatch):
    from spaces.config import Config
    from spaces.zero import client, utils

    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/draggan-test\n")
    monkeypatch.setattr(Config, "zerogpu_proc_self_cgroup_path", str(cgroup))
    utils.self_cgroup_device_path.cache_clear()
    yield client, Config, monkeypatch
    utils.self_cgroup_device_path.cache_clear()


def refusal(client, action: str, auth: str | None = None, request=None) -> Exception:
    module, config, monkeypatch = client
    with DeviceService([action], auth=auth) as service:
        monkeypatch.setattr(config, "zero_device_api_url", service.url)
        with pytest.raises(Exception) as caught:
            module.schedule(task_id=0, request=request, duration=timedelta(seconds=gpu.DRAG_SECONDS))
    return caught.value


def visitor(user: str = "visitor"):
    """A browser visitor's request with a ZeroGPU IP token, as the Space's proxy adds it."""
    import gradio as gr

    payload = base64.urlsafe_b64encode(json.dumps({"user": user}).encode()).decode().rstrip("=")
    return gr.Request(headers={"x-ip-token": f"header.{payload}.signature", "x-gradio-user": "app"})


def test_explain_failure_reads_spaces_quota_and_no_gpu_refusals(client):
    from spaces.zero.client import EXAMPLES_RETRY_MESSAGE, NO_GPU_MESSAGE_REGULAR

    anonymous = refusal(client, "quota")
    assert anonymous.title == "ZeroGPU quota exceeded" and EXAMPLES_RETRY_MESSAGE in anonymous.message
    signed_in = refusal(client, "quota", auth="regular", request=visitor())
    assert "You have exceeded your free ZeroGPU quota" in signed_in.message
    assert "Try again in 0:05:00" in signed_in.message
    busy = refusal(client, "busy")
    assert busy.message == NO_GPU_MESSAGE_REGULAR
    for exc in (anonymous, signed_in, busy):
        text = gpu.explain_failure(exc)
        assert text.startswith("No GPU time now (") and exc.message.strip() in text and "press Start" in text
        assert "'" + exc.message not in text, "the message itself, not gr.Error's repr of it"
    too_long = gpu.explain_failure(refusal(client, "too-long"))
    assert too_long.startswith("ZeroGPU refused the GPU time this app asks for per step")


def test_explain_failure_reads_spaces_worker_errors():
    from spaces.zero.client import NO_GPU_MESSAGE_INQUEUE
    from spaces.zero.gradio import error

    # As wrappers.py raises them: the worker was ended (its grant ran out), or the task raised inside it.
    aborted = gpu.explain_failure(error("ZeroGPU worker error", "GPU task aborted"))
    assert "GPU time granted for this step ran out" in aborted and "press Start" in aborted
    raised = gpu.explain_failure(error("ZeroGPU worker error", "ValueError"))
    assert raised == "The drag failed on the GPU worker: ValueError"
    queued = gpu.explain_failure(error("ZeroGPU queue timeout", f"{NO_GPU_MESSAGE_INQUEUE}. Retry later"))
    assert queued.startswith("No GPU time now (No GPU was available after 60s")
    assert gpu.explain_failure(ValueError("bad")) == "The drag failed: ValueError: bad"
