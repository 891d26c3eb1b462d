"""The centroid tracker: the soft-argmin centre of the official search's matching valley, on synthetic feature
maps where the answer is known; the registry, the app's choice and a drag with it (recipe replay:
tests/test_recipes.py, for every tracker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from draggan.checkpoints import load_generator
from draggan.engine import DragConfig, DragSession
from draggan.engine.centroid_tracking import CentroidTracker
from draggan.engine.features import UpsampledView
from draggan.engine.trackers import TRACKER_NAMES, make_tracker
from draggan.engine.tracking import reference_features, track_points

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
CHANNELS = 8
BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "cartoon-faces-128"


def _scene(seed: int = 0) -> tuple[UpsampledView, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random [C, 16, 16] map read at its own size, a handle at (8, 6) and its reference feature."""
    feat = 3 * torch.randn(CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    view = UpsampledView.create((SIZE, SIZE), (SIZE, SIZE))
    handle = torch.tensor([[8, 6]])
    return view, feat, handle, reference_features(view, feat, handle)


def _noise(seed: int, scale: float) -> torch.Tensor:
    return scale * torch.randn(CHANNELS, generator=torch.Generator().manual_seed(seed))


def _unit(seed: int) -> torch.Tensor:
    v = _noise(seed, 1.0)
    return v / torch.linalg.norm(v)


TARGET = torch.tensor([[8.0, 14.0]], dtype=torch.float64)


def test_it_follows_a_moved_feature_like_the_official_search():
    view, feat0, handle, ref = _scene(1)
    moved = torch.roll(feat0, shifts=(1, 2), dims=(1, 2))          # everything moved 1 down, 2 right
    moved = moved + 0.01 * torch.randn(moved.shape, generator=torch.Generator().manual_seed(2))
    tracker = CentroidTracker(view, ref, radius=3)
    assert tracker(moved, handle, TARGET).tolist() == [[9, 8]]
    assert track_points(view, moved, ref, handle, 3).tolist() == [[9, 8]]


def test_it_takes_the_centre_of_a_smear_where_official_takes_its_tip():
    """Motion supervision leaves copies of the handle's feature along the drag line; the content sits in
    the middle of the smear. The best single match is the smear's leading end."""
    view, feat, handle, ref = _scene(2)
    e = _unit(10)
    for col, cost in ((6, 0.3), (7, 0.3), (8, 0.3), (9, 0.25)):
        feat[:, 8, col] = ref[0] + cost * e
    assert track_points(view, feat, ref, handle, 3).tolist() == [[8, 9]]
    # weights e⁻¹ for columns 6–8 (20 % worse than the best), 1 for column 9: centre 7.95
    assert CentroidTracker(view, ref, radius=3)(feat, handle, TARGET).tolist() == [[8, 8]]
    assert CentroidTracker(view, ref, radius=3, temperature=0.01)(feat, handle, TARGET).tolist() == [[8, 9]]


def test_far_worse_matches_do_not_pull_the_handle():
    view, feat, handle, ref = _scene(3)
    feat[:, 8, 6] = -ref[0]                     # the feature left the handle
    feat[:, 8, 7] = ref[0] + _noise(4, 0.05)    # the feature, 1 px on
    feat[:, 5, 9] = ref[0] + _noise(5, 1.0)     # a poor look-alike 3 px away (costs many times more)
    assert CentroidTracker(view, ref, radius=3)(feat, handle, TARGET).tolist() == [[8, 7]]


def test_an_exact_match_is_kept_and_the_answer_stays_in_the_window():
    view, feat, handle, ref = _scene(4)
    tracker = CentroidTracker(view, ref, radius=3)
    assert tracker(feat, handle, TARGET).tolist() == [[8, 6]]              # first step: c(p) = 0
    corner = torch.tensor([[0, 15]])
    ref_corner = reference_features(view, feat, corner)
    other = 3 * torch.randn(feat.shape, generator=torch.Generator().manual_seed(9))
    new = CentroidTracker(view, ref_corner, radius=3)(other, corner, TARGET)
    assert 0 <= new[0, 0] <= 3 and 12 <= new[0, 1] <= 15                  # clipped window, inside the image


def test_the_valley_radius_keeps_two_far_apart_matches_from_averaging():
    view, feat, handle, ref = _scene(5)
    feat[:, 8, 6] = -ref[0]
    feat[:, 5, 3] = ref[0] + 0.1 * _unit(6)
    feat[:, 11, 9] = ref[0] - 0.1 * _unit(6)
    free = CentroidTracker(view, ref, radius=3)(feat, handle, TARGET)[0].tolist()
    local = CentroidTracker(view, ref, radius=3, valley=1)(feat, handle, TARGET)[0].tolist()
    assert free == [8, 6], "two equal matches at opposite corners average to the middle"
    assert local == track_points(view, feat, ref, handle, 3)[0].tolist() == [5, 3]


def test_settings_are_validated_and_the_name_is_offered_everywhere():
    view, feat, handle, ref = _scene(6)
    for kwargs in (dict(temperature=0), dict(temperature=-1), dict(valley=-1)):
        with pytest.raises(ValueError):
            CentroidTracker(view, ref, radius=3, **kwargs)
    assert "centroid" in TRACKER_NAMES and DragConfig(tracker="centroid").tracker == "centroid"
    assert isinstance(make_tracker("centroid", view, ref, feat, handle, 3), CentroidTracker)
    assert make_tracker("centroid", view, ref, feat, handle, 3).state() == {}
    import app
    assert [value for _, value in app.TRACKER_CHOICES] == list(TRACKER_NAMES)



def test_a_drag_on_the_bundled_model_moves_its_handle_to_the_target():
    """On a trained model (the bundled 128-px faces); the tiny random fixture's feature maps are too flat
    (see the module docstring's limitation)."""
    G = load_generator(str(BUNDLED))
    s = DragSession(G, seed=0, config=DragConfig(lr=4e-3, tracker="centroid"))
    s.set_points([(60, 70)], [(68, 70)])
    results = list(s.run(max_steps=60, render_every=0))
    assert results[0].distances[0] == 8.0
    assert results[-1].distances[0] <= 3 and results[-1].handles[0][0] >= 65
