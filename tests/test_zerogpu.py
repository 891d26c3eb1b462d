"""ZeroGPU's contract, kept: every GPU function gives the same result in a forked, pickling worker as in-process.

`draggan.server.forked` runs a function as `spaces.GPU` does on ZeroGPU (a forked process; arguments pickled in,
each yield or the result pickled back; nothing else shared). A GPU function that changed state in place
instead of returning it would lose that change here, and these comparisons would fail.
"""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from _plain_gpu import PLAIN
from draggan import settings
from draggan.engine import snapshot as snapshots
from draggan.recipes import DragRecord, Recipe
from draggan.service import gpu, handlers, photo
from draggan.server.forked import WorkerError, forked, pipes_and_sockets
from draggan.service.gpu import StopFlag
from draggan.service.models import ModelRef
from draggan.service.models import shared_cache

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")]

SG2 = Path(__file__).parent / "data" / "stylegan2-tiny-64.pkl"
REF = ModelRef(str(SG2), "tiny")
CONFIG = handlers.make_config(lr=5e-3, max_steps=6)


@pytest.fixture(scope="module", autouse=True)
def loaded() -> None:
    shared_cache().get(REF.source, torch.device("cpu"))   # as the server preloads it before forking


def same(a, b) -> None:
    """Deep equality of plain results: arrays exactly, dataclasses field by field."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            if f.name != "seconds":
                same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    else:
        assert a == b


def both(name: str, *args):
    """The in-process result and the forked-worker result of GPU function `name`."""
    fn = PLAIN[name]
    run = (lambda f: list(f(*args))) if name in ("drag", "invert") else (lambda f: f(*args))
    return run(fn), run(forked(fn))


def test_new_image_and_render_round_trip():
    local, remote = both("new_image", REF, "cpu", 3, 0.7, CONFIG)
    same(local, remote)
    snap, image = remote
    same(both("render", REF, "cpu", snap)[1], image)


def test_drag_updates_and_snapshot_come_back_whole(tmp_path):
    snap, _ = PLAIN["new_image"](REF, "cpu", 1, 0.7, CONFIG)
    snap = snapshots.set_points(snap, [(20, 20)], [(34, 28)])
    local, remote = both("drag", REF, "cpu", snap, 5, StopFlag(str(tmp_path / "stop")), float("inf"), 2)
    assert [u.step for u in remote] == [1, 2, 3, 4, 5] and [u.snapshot is None for u in remote[:-1]]
    same(local, remote)
    final = remote[-1]
    assert final.end == "limit" and final.snapshot.drags()[0].steps == 5 and final.image is not None
    assert not np.array_equal(final.image, PLAIN["render"](REF, "cpu", snap))


def test_a_chunked_drag_equals_one_uninterrupted_drag(tmp_path):
    """ZeroGPU grants are short: a drag split into calls of a few steps ends exactly where one call does."""
    snap, _ = PLAIN["new_image"](REF, "cpu", 2, 0.7, CONFIG)
    snap = snapshots.set_points(snap, [(20, 20)], [(40, 30)])
    whole = list(PLAIN["drag"](REF, "cpu", snap, 6, None, float("inf"), 0))[-1]
    drag = forked(PLAIN["drag"])
    current, calls = snap, 0
    while True:
        last = list(drag(REF, "cpu", current, 6, None, 1e-9, 0))[-1]   # a budget of one step per call
        current, calls = last.snapshot, calls + 1
        if last.end != "budget":
            break
    assert calls == 6 and last.end == "limit"
    assert np.array_equal(snapshots.full_latent(current), snapshots.full_latent(whole.snapshot))
    assert len(current.drags()) == 1 and current.drags()[0].steps == 6, "one history entry for the whole drag"


def test_stop_reaches_the_worker(tmp_path):
    snap, _ = PLAIN["new_image"](REF, "cpu", 2, 0.7, CONFIG)
    snap = snapshots.set_points(snap, [(20, 20)], [(60, 60)])
    stop = StopFlag(str(tmp_path / "stop"))
    updates = []
    for update in forked(PLAIN["drag"])(REF, "cpu", snap, 10_000, stop, float("inf"), 0):
        updates.append(update)
        if len(updates) == 3:
            stop.set()                                   # the server's side: a file the worker sees
    assert updates[-1].end == "stopped" and 3 <= updates[-1].step < 10
    assert updates[-1].snapshot.drags()[0].steps == updates[-1].step


def test_replay_and_invert_round_trip(tmp_path):
    recipe = Recipe(model=REF.source, seed=4, psi=0.7, space="w+", image_size=(64, 64),
                    drags=[DragRecord(handles=[(20.0, 20.0)], targets=[(30.0, 26.0)], steps=3, lr=5e-3,
                                      mask_lambda=20.0)])
    same(*both("replay", REF, "cpu", recipe, 1))

    target = PLAIN["new_image"](REF, "cpu", 9, 0.5, CONFIG)[1]
    config = photo.make_inversion_config(3, 2, 3, w_avg_samples=200)
    local, remote = both("invert", REF, "cpu", target, config, CONFIG, None, "photo")
    done_local, done_remote = local[-1], remote[-1]
    assert isinstance(done_remote, gpu.InversionDone) and done_remote.model.private
    assert done_local.model != done_remote.model, "each inversion writes its own private copy"
    same(local[:-1], remote[:-1])
    same(dataclasses.replace(done_local, model=None), dataclasses.replace(done_remote, model=None))
    G_remote = shared_cache().get(done_remote.model.source, torch.device("cpu"))  # written by the worker, read here
    assert G_remote.img_height == 64


def test_the_harness_catches_state_changed_only_in_the_worker():
    def in_place(box: dict) -> None:        # wrong on ZeroGPU: the caller never sees the change
        box["latent"] = 1

    box_local, box_remote = {}, {}
    in_place(box_local)
    forked(in_place)(box_remote)
    assert box_local == {"latent": 1} and box_remote == {}, "a forked call must not share memory"

    with pytest.raises(TypeError, match="pickle"):
        forked(in_place)(threading.Lock())   # unpicklable arguments fail in the caller, as with spaces

    def broken() -> None:
        raise ValueError("bad model")
    with pytest.raises(ValueError, match="bad model"):
        forked(broken)()

    def dies() -> None:
        os._exit(3)
    with pytest.raises(WorkerError, match="exit code 3"):
        forked(dies)()


def test_handlers_work_with_every_gpu_call_forked(monkeypatch):
    """The editor's whole drag flow with DRAGGAN_FORKED_GPU=1: new image, drag, undo, redo, reset."""
    monkeypatch.setenv("DRAGGAN_FORKED_GPU", "1")
    settings.reload()
    ui = handlers.make_state(REF, "cpu", 0, 0.7, "w+", CONFIG)
    ui.snap = snapshots.set_points(ui.snap, [(20, 20)], [(30, 26)])
    job = handlers.run_blocking(ui)
    assert job.steps == 6 and len(ui.snap.drags()) == 1
    monkeypatch.delenv("DRAGGAN_FORKED_GPU")
    settings.reload()
    local = handlers.make_state(REF, "cpu", 0, 0.7, "w+", CONFIG)
    local.snap = snapshots.set_points(local.snap, [(20, 20)], [(30, 26)])
    handlers.run_blocking(local)
    assert np.array_equal(snapshots.full_latent(ui.snap), snapshots.full_latent(local.snap))
    assert np.array_equal(ui.image, local.image)


# ----------------------------------------------------------------------------------------------------------
# ZeroGPU as spaces 0.51.3 runs it: a kept worker, a thread per call, durations sized per call, no tensors.

def _where() -> tuple[int, bool]:
    return os.getpid(), threading.current_thread() is threading.main_thread()


def test_the_worker_is_kept_and_each_call_runs_in_a_thread_of_it():
    call = forked(_where)
    try:
        (pid1, main1), (pid2, main2) = call(), call()
        assert pid1 == pid2 != os.getpid(), "the second call reuses the first call's worker"
        assert not main1 and not main2, "the function runs in a thread of the worker, not its main thread"
        assert call.pool.pids == [pid1, pid2]
    finally:
        call.pool.close()

    def broken() -> None:
        raise ValueError("bad")
    failing = forked(broken)
    with pytest.raises(ValueError):
        failing()
    with pytest.raises(ValueError):
        failing()
    assert failing.pool.pids[0] != failing.pool.pids[1], "a worker whose call failed is not reused"


def _ready(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_kept_worker_holds_none_of_the_servers_pipes_or_sockets():
    """A worker forked while the server holds a pipe (a subprocess's stdin, as Playwright's driver and Gradio's
    SSR server have) or a socket (a visitor's connection) lets go of its copies: when the server closes its
    end, the other end sees it at once, not when the kept worker ends. The worker's own connection and
    multiprocessing's sentinel stay: calls still work, and the worker exits by itself when its caller hangs up."""
    read_end, write_end = os.pipe()
    server_side, visitor_side = socket.socketpair()
    call = forked(_where)
    try:
        call()
        held = pipes_and_sockets()
        assert write_end in held and server_side.fileno() in held
        os.close(write_end)
        server_side.close()
        assert _ready(read_end, 5) and os.read(read_end, 1) == b"", "the worker kept the pipe's write end open"
        visitor_side.settimeout(5)
        assert visitor_side.recv(1) == b"", "the worker kept the visitor's socket open"
        (pid1, _), (pid2, _) = call(), call()
        assert pid1 == pid2 == call.pool.pids[0], "the kept worker still serves calls over its own connection"
        worker = call.pool._idle[0]
        worker.end()
        assert worker.process.exitcode == 0, "the worker ended on hang-up, not by end()'s kill after its timeout"
    finally:
        call.pool.close()
        os.close(read_end)
        visitor_side.close()


def _tensor_back() -> torch.Tensor:
    return torch.zeros(2)


def test_no_tensor_crosses_the_boundary_either_way():
    """GPU functions take and give numpy arrays and plain values: a tensor in the arguments is refused in the
    caller, a tensor in a result or a yield comes back as an error, never as a tensor. Every round trip in this
    file (new image, render, drag, replay, invert) passes through the same check."""
    call = forked(_where)
    try:
        with pytest.raises(TypeError, match="torch.Tensor"):
            call(torch.ones(3))
        with pytest.raises(TypeError, match="torch.Tensor"):
            call(dict(nested=[torch.ones(1)]))
    finally:
        call.pool.close()
    with pytest.raises(WorkerError, match="torch.Tensor"):
        forked(_tensor_back)()

    def yields_tensor():
        yield np.zeros(2)
        yield torch.zeros(2)
    assert [type(v) for v in yields_tensor()] == [np.ndarray, torch.Tensor]
    received = []
    with pytest.raises(WorkerError, match="torch.Tensor"):
        for value in forked(yields_tensor)():
            received.append(value)
    assert len(received) == 1 and isinstance(received[0], np.ndarray)


def test_a_drag_asks_for_its_chunks_budget_plus_start_up_sized_per_call(monkeypatch, tmp_path):
    """`drag`'s duration is a callable of its arguments (spaces calls it per call): budget + start-up, at most
    the configured grant; a drag in chunks asks for its full chunk, then only what its remaining steps need."""
    import sys
    import types

    snap, _ = PLAIN["new_image"](REF, "cpu", 1, 0.7, CONFIG)
    assert gpu.drag_seconds(REF, "cpu", snap, 10, None, 7.0) == 7 + gpu.START_SECONDS
    assert gpu.drag_seconds(REF, "cpu", snap, 10, None, float("inf")) == gpu.DRAG_SECONDS
    assert gpu.drag_seconds(REF, "cpu", snap, 10, None, 2.2, 0, None) == 8

    asked = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration: (lambda fn: (lambda *a, **k: asked.append(duration(*a, **k)) or fn(*a, **k)))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    wrapped = gpu._decorator(gpu.drag_seconds)(gpu._drag)
    updates = list(wrapped(REF, "cpu", snapshots.set_points(snap, [(20, 20)], [(34, 28)]), 2, None, 3.0))
    assert asked == [8] and updates[-1].snapshot is not None, "spaces.GPU got the callable"

    assert handlers.next_chunk_seconds(40.0, 10, 4.0, 100) == 40.0, "100 steps at 0.4 s need the full chunk"
    assert handlers.next_chunk_seconds(40.0, 10, 4.0, 5) == pytest.approx(5 * 0.4 * 1.25 + 1)
    assert handlers.next_chunk_seconds(40.0, 0, 4.0, 5) == 40.0, "no pace known yet"


def test_a_kept_worker_never_serves_a_stale_generator_or_cache(tmp_path):
    """Between two calls in the same worker the server changes state: another model, a re-tuned photo, a
    released session. The worker renders each model's own image (equal to the server's), serves a re-tuned
    photo's new weights, and refuses a released photo's model although it had loaded it."""
    from draggan.service.models import forget_private_model

    render = forked(PLAIN["render"])
    invert = forked(PLAIN["invert"])
    other = ModelRef(str(Path(__file__).parent / "data" / "stylegan2-tf-tiny-64.pkl"), "tf tiny")
    try:
        snap, image = PLAIN["new_image"](REF, "cpu", 5, 0.7, CONFIG)
        same(render(REF, "cpu", snap), image)
        other_snap, other_image = PLAIN["new_image"](other, "cpu", 5, 0.7, CONFIG)
        assert not np.array_equal(other_image, image)
        same(render(other, "cpu", other_snap), other_image)          # another model, same worker
        same(render(REF, "cpu", snap), image)

        target = PLAIN["new_image"](REF, "cpu", 9, 0.5, CONFIG)[1]
        tuned = []
        for pti_steps in (2, 6):                                      # the photo, then re-tuned
            config = photo.make_inversion_config(3, 2, pti_steps, w_avg_samples=200)
            done = list(invert(REF, "cpu", target, config, CONFIG, None, "photo"))[-1]
            tuned.append(done)
            same(render(done.model, "cpu", done.snapshot), done.image)
        assert tuned[0].model.source != tuned[1].model.source and not np.array_equal(tuned[0].image, tuned[1].image)
        same(render(tuned[0].model, "cpu", tuned[0].snapshot), tuned[0].image)

        forget_private_model(tuned[0].model)                          # its session ended
        with pytest.raises(FileNotFoundError, match="released"):
            render(tuned[0].model, "cpu", tuned[0].snapshot)
        same(render(tuned[1].model, "cpu", tuned[1].snapshot), tuned[1].image)
        assert len(render.pool.pids) == 8 and len(set(render.pool.pids[:7])) == 1, \
            "every change above reached one kept worker, the refusal included (a failed call ends it)"
        assert len(set(invert.pool.pids)) == 1, "both inversions ran in the kept worker"
    finally:
        render.pool.close()
        invert.pool.close()
        for done in tuned:
            forget_private_model(done.model)
