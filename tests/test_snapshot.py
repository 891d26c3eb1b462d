"""DragSession ⇄ DragSnapshot: plain picklable state that continues a drag bit for bit in another session."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from draggan.engine import DragConfig, DragSession
from draggan.engine import snapshot as snapshots
from draggan.networks.stylegan2 import Generator

pytestmark = pytest.mark.usefixtures("one_thread")


def small_generator(resolution: int = 32) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()


@pytest.fixture(scope="module")
def G() -> Generator:
    return small_generator()


def _steps(session: DragSession, n: int) -> list:
    return [session.step() for _ in range(n)]


def _plain(obj) -> None:
    """Fail if a snapshot holds anything but arrays, numbers, strings, tuples, dicts and frozen dataclasses."""
    if isinstance(obj, (np.ndarray, int, float, str, bool, type(None))):
        return
    if isinstance(obj, (tuple, list)):
        for v in obj:
            _plain(v)
        return
    if isinstance(obj, dict):
        for v in obj.values():
            _plain(v)
        return
    assert hasattr(obj, "__dataclass_fields__"), f"not plain data: {type(obj)}"
    for name in obj.__dataclass_fields__:
        _plain(getattr(obj, name))


@pytest.mark.parametrize("mask, tracker", [(False, "official"), (True, "official"), (False, "freedrag-ms")])
def test_snapshot_continues_a_drag_bit_for_bit(G: Generator, mask: bool, tracker: str) -> None:
    cfg = DragConfig(lr=5e-3, tracker=tracker)
    ref = DragSession(G, seed=2, config=cfg)
    ref.set_points([(10, 12)], [(20, 14)])
    fixed = np.zeros((32, 32), np.float32)
    fixed[:, 24:] = 1
    if mask:
        ref.set_mask(fixed)
    expected = _steps(ref, 6)

    a = DragSession(G, seed=2, config=cfg)
    a.set_points([(10, 12)], [(20, 14)])
    if mask:
        a.set_mask(fixed)
    first = _steps(a, 3)
    snap = pickle.loads(pickle.dumps(a.snapshot()))
    _plain(snap)
    b = DragSession.from_snapshot(G, snap)
    rest = _steps(b, 3)
    assert [r.handles for r in first + rest] == [r.handles for r in expected]
    assert [r.loss for r in first + rest] == [r.loss for r in expected]
    assert torch.equal(b.ws, ref.ws)


def test_the_freedrag_trackers_learnt_template_travels_too(G: Generator) -> None:
    """FreeDrag adapts a template during the drag; a snapshot carries it (else tracking after a ZeroGPU chunk
    would restart from the first template and the drag would go elsewhere)."""
    cfg = DragConfig(lr=2e-2, tracker="freedrag-ms")
    points = ([(8, 8), (20, 24)], [(24, 12), (6, 20)])
    ref = DragSession(G, seed=0, config=cfg)
    ref.set_points(*points)
    expected = _steps(ref, 16)
    a = DragSession(G, seed=0, config=cfg)
    a.set_points(*points)
    first = _steps(a, 8)
    snap = pickle.loads(pickle.dumps(a.snapshot()))
    assert set(snap.drag.tracker_state) == {"pos", "template", "expected", "loss_ini", "loss_end", "arrived",
                                            "counters"}
    b = DragSession.from_snapshot(G, snap)
    rest = _steps(b, 8)
    assert [r.handles for r in first + rest] == [r.handles for r in expected]
    assert torch.equal(b.ws, ref.ws)


def test_history_travels_with_the_snapshot(G: Generator) -> None:
    s = DragSession(G, seed=1, config=DragConfig(lr=5e-3))
    start = s.ws
    s.set_points([(8, 8)], [(16, 8)])
    list(s.run(max_steps=3, render_every=0))
    after = s.ws
    snap = s.snapshot()
    assert snap.hist_idx == 1 and snap.can_undo and not snap.can_redo
    (drag,) = snap.drags()
    assert drag.handles == ((8.0, 8.0),) and drag.targets == ((16.0, 8.0),) and drag.steps == 3
    assert drag.lr == 5e-3 and not drag.resume

    undone = snapshots.undo(snap)            # no generator needed
    assert undone.hist_idx == 0 and undone.handles == ((8.0, 8.0),) and undone.drags() == []
    t = DragSession.from_snapshot(G, undone)
    assert torch.equal(t.ws, start) and t.handles == [(8.0, 8.0)]
    redone = snapshots.redo(undone)
    assert torch.equal(DragSession.from_snapshot(G, redone).ws, after)
    assert snapshots.redo(redone) is None and snapshots.undo(snapshots.reset(snap)) is None


def test_resumed_run_is_its_own_entry(G: Generator) -> None:
    s = DragSession(G, seed=4, config=DragConfig(lr=5e-3))
    s.set_points([(8, 8)], [(24, 8)])
    list(s.run(max_steps=2, render_every=0))
    moved = s.snapshot()
    resumed = DragSession.from_snapshot(G, moved)
    list(resumed.run(max_steps=2, render_every=0))
    first, second = resumed.snapshot().drags()
    assert not first.resume and second.resume and second.steps == 2
    assert second.handles == moved.handles        # a resumed drag starts from the tracked points


def test_edits_are_validated(G: Generator) -> None:
    snap = DragSession(G, seed=0).snapshot()
    with pytest.raises(ValueError, match="outside"):
        snapshots.set_points(snap, [(40, 1)], [(1, 1)])
    with pytest.raises(ValueError, match="mask must be"):
        snapshots.set_mask(snap, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="cannot change"):
        snapshots.with_config(snap, space="w")
    with pytest.raises(ValueError, match="lr"):
        snapshots.with_config(snap, lr=float("nan"))
    assert snapshots.with_config(snap, lr=0.01).config.lr == 0.01
    with pytest.raises(ValueError, match="snapshot is of"):
        DragSession.from_snapshot(small_generator(64), snap)
