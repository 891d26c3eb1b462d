"""The tracker option: registry and validation, the FreeDrag-style line-band tracker on synthetic feature maps
(where official tracking jumps to a distractor), and a drag on the fixture generator with it."""

from __future__ import annotations

import pytest
import torch

from conftest import fixture_path
from draggan.checkpoints.builders import generator_from_persistent
from draggan.checkpoints.nvidia_pickle import read_network_pickle
from draggan.engine import DragConfig, DragSession
from draggan.engine.features import UpsampledView
from draggan.engine.robust_tracking import LineSearchTracker
from draggan.engine.trackers import TRACKER_NAMES, OfficialTracker, make_tracker
from draggan.engine.tracking import reference_features, track_points

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
CHANNELS = 8


def _scene(seed: int = 0) -> tuple[UpsampledView, torch.Tensor, torch.Tensor]:
    """A smooth random [C, 16, 16] map read at its own size (no upsampling), its handle (8, 4) and reference."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(CHANNELS, SIZE, SIZE, generator=gen)
    view = UpsampledView.create((SIZE, SIZE), (SIZE, SIZE))
    handle = torch.tensor([[8, 4]])
    return view, feat, handle


def test_tracker_option_is_validated_and_official_is_the_default():
    assert DragConfig().tracker == "official" and TRACKER_NAMES == ("official", "freedrag", "centroid", "freedrag-ms",
                                                                          "freedrag-local")
    assert DragConfig(tracker="freedrag").tracker == "freedrag"
    with pytest.raises(ValueError, match="tracker"):
        DragConfig(tracker="nearest")
    view, feat, handle = _scene()
    ref = reference_features(view, feat, handle)
    assert isinstance(make_tracker("official", view, ref, feat, handle, 3), OfficialTracker)
    assert isinstance(make_tracker("freedrag", view, ref, feat, handle, 3), LineSearchTracker)
    with pytest.raises(ValueError, match="tracker"):
        make_tracker("nearest", view, ref, feat, handle, 3)


def test_official_tracker_object_equals_track_points():
    view, feat, handle = _scene(1)
    ref = reference_features(view, feat, handle)
    moved = feat + 0.3 * torch.randn(feat.shape, generator=torch.Generator().manual_seed(5))
    tracker = OfficialTracker(view, ref, 3)
    target = torch.tensor([[8.0, 12.0]], dtype=torch.float64)
    assert torch.equal(tracker(moved, handle, target), track_points(view, moved, ref, handle, 3))


def test_official_jumps_to_a_distractor_and_the_line_band_tracker_holds():
    """The handle's feature moved 1 px towards the target, slightly changed; an exact copy of the reference
    sits 3 px off the drag line, inside the official window: official tracking takes the copy."""
    view, feat0, handle = _scene(2)
    ref = reference_features(view, feat0, handle)
    target = torch.tensor([[8.0, 12.0]], dtype=torch.float64)
    feat = feat0.clone()
    feat[:, 8, 5] = ref[0] + 0.05 * torch.randn(CHANNELS, generator=torch.Generator().manual_seed(3))
    feat[:, 8, 4] = torch.randn(CHANNELS, generator=torch.Generator().manual_seed(4)) * 3  # the feature left p
    feat[:, 5, 7] = ref[0]  # distractor
    official = make_tracker("official", view, ref, feat0, handle, 3)
    robust = make_tracker("freedrag", view, ref, feat0, handle, 3)
    assert official(feat, handle, target).tolist() == [[5, 7]]
    assert robust(feat, handle, target).tolist() == [[8, 5]]
    assert bool(robust.trusted[0])


def test_line_band_tracker_backtracks_without_learning_and_adapts_when_trusted():
    view, feat0, handle = _scene(4)
    ref = reference_features(view, feat0, handle)
    target = torch.tensor([[8.0, 12.0]], dtype=torch.float64)
    tracker = LineSearchTracker(view, ref, feat0, handle, radius=3)
    # The feature fell behind the handle (1 px away from the target) and nothing ahead resembles it.
    behind = torch.randn(feat0.shape, generator=torch.Generator().manual_seed(9)) * 5
    behind[:, 8, 3] = ref[0]
    assert tracker(behind, handle, target).tolist() == [[8, 3]]
    assert not bool(tracker.trusted[0]) and torch.equal(tracker.template, ref)
    # A trusted forward match: the handle moves at most max_move = 2 px, and the template moves towards it.
    ahead = feat0.clone()
    ahead[:, 8, 4] = -ref[0]
    ahead[:, 8, 6] = ref[0] + 0.2
    new = tracker(ahead, handle, target)
    assert new.tolist() == [[8, 6]] and bool(tracker.trusted[0])
    expected = 0.9 * ref + 0.1 * ahead[:, 8, 6][None]
    assert torch.allclose(tracker.template, expected)
    # Bounded: an exact match 3 px ahead on the line is out of reach in one step.
    far = feat0.clone()
    far[:, 8, 4] = -ref[0]
    far[:, 8, 7] = ref[0]
    assert tracker(far, handle, target)[0, 1] - handle[0, 1] <= 2


def test_line_band_tracker_keeps_an_arrived_handle_and_rejects_bad_settings():
    view, feat0, handle = _scene(6)
    ref = reference_features(view, feat0, handle)
    tracker = LineSearchTracker(view, ref, feat0, handle, radius=3)
    here = torch.tensor([[8.0, 4.0]], dtype=torch.float64)
    assert tracker(feat0, handle, here).tolist() == [[8, 4]]
    for kwargs in (dict(trust=0), dict(beta=1.5), dict(lateral=-1), dict(max_move=0.1)):
        with pytest.raises(ValueError):
            LineSearchTracker(view, ref, feat0, handle, radius=3, **kwargs)


def test_freedrag_tracker_drags_the_fixture_towards_its_target():
    G = generator_from_persistent(read_network_pickle(fixture_path("stylegan2-tiny-64.pkl"))["G_ema"])
    s = DragSession(G, seed=0, config=DragConfig(lr=2e-3, tracker="freedrag"))
    s.set_points([(20, 30)], [(30, 30)])
    results = list(s.run(max_steps=40, render_every=0))
    assert results[0].distances[0] == 10.0
    assert results[-1].distances[0] <= 4 and results[-1].handles[0][0] > 25
    steps = [abs(b.handles[0][0] - a.handles[0][0]) + abs(b.handles[0][1] - a.handles[0][1])
             for a, b in zip(results, results[1:])]
    assert max(steps) <= 3, "a handle moves a bounded distance per step"


def test_only_trusted_handles_learn_their_template():
    view, feat0, _ = _scene(7)
    handles = torch.tensor([[8, 4], [3, 10]])
    ref = reference_features(view, feat0, handles)
    targets = torch.tensor([[8.0, 12.0], [3.0, 15.0]], dtype=torch.float64)
    tracker = LineSearchTracker(view, ref, feat0, handles, radius=3)
    feat = torch.randn(feat0.shape, generator=torch.Generator().manual_seed(8)) * 5
    feat[:, 8, 5] = ref[0] + 0.1   # handle 0: found ahead on its line
    feat[:, 3, 9] = ref[1]         # handle 1: fell behind
    assert tracker(feat, handles, targets).tolist() == [[8, 5], [3, 9]]
    assert tracker.trusted.tolist() == [True, False]
    assert torch.allclose(tracker.template[0], 0.9 * ref[0] + 0.1 * feat[:, 8, 5])
    assert torch.equal(tracker.template[1], ref[1])
