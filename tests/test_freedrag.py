"""FreeDrag's feature dragging (`freedrag-ms`): the line search (bounded move on, stay, backtrack), the template
update rule and the supervision loss on synthetic feature maps; the registry and a drag (recipe replay: tests/test_recipes.py, for every tracker)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from draggan.checkpoints import load_generator
from draggan.engine import DragConfig, DragSession
from draggan.engine.features import UpsampledView
from draggan.engine import methods
from draggan.engine.methods import DragGeometry
from draggan.engine.methods.freedrag_ms import SUBSTEPS, FreeDrag

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 24
CHANNELS = 8
HANDLE = torch.tensor([[12, 6]])
TARGET = torch.tensor([[12.0, 18.0]], dtype=torch.float64)
BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "cartoon-faces-128"


def _scene(seed: int = 0) -> tuple[UpsampledView, torch.Tensor]:
    """A random [C, 24, 24] map read at its own size (no upsampling)."""
    feat = torch.randn(CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return UpsampledView.create((SIZE, SIZE), (SIZE, SIZE)), feat


def _tracker(view: UpsampledView, feat: torch.Tensor, radius: int = 4, **settings) -> FreeDrag:
    """The method for one drag from handle HANDLE on `feat`, r2 = `radius` (r1 and arrival are not read)."""
    geometry = DragGeometry.create(view, r1_px=1, r2_px=radius, arrive_px=2.0)
    return FreeDrag(geometry, feat[:, 12, 6][None], feat, HANDLE, **settings)


def _loss_at(tracker: FreeDrag, feat: torch.Tensor, point: torch.Tensor) -> float:
    """ℓ: mean |F(point + O) − T| over the 3×3 patch (spacing 1 at radius 4) and the channels, by hand."""
    total = 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = float(point[0]) + dy, float(point[1]) + dx
            y0, x0 = math.floor(y), math.floor(x)
            fy, fx = y - y0, x - x0
            value = ((1 - fy) * (1 - fx) * feat[:, y0, x0] + (1 - fy) * fx * feat[:, y0, x0 + 1]
                     + fy * (1 - fx) * feat[:, y0 + 1, x0] + fy * fx * feat[:, y0 + 1, x0 + 1])
            total += float((value - tracker.template[0, (dy + 1) * 3 + dx + 1]).abs().mean())
    return total / 9


def test_the_first_sub_motion_moves_a_bounded_step_along_the_line_to_the_expected_loss():
    view, feat = _scene(1)
    tracker = _tracker(view, feat)       # d = 3 px
    assert torch.equal(tracker.template[0, 4], feat[:, 12, 6])    # T starts as the handle's patch
    moved = tracker.track(feat, HANDLE, TARGET)
    pos = tracker.pos[0]
    assert pos[0] == 12 and 6 < pos[1] <= 9, "on the handle → target line, at most d = 3 px on"
    assert moved.tolist() == [[12, round(float(pos[1]))]]
    candidates = [torch.tensor([12.0, 6 + 0.3 * i]) for i in range(1, 11)]
    gaps = [abs(_loss_at(tracker, feat, c) - float(tracker.expected[0])) for c in candidates]
    assert float(pos[1]) == pytest.approx(6 + 0.3 * (1 + gaps.index(min(gaps))))


def test_the_loss_pulls_the_next_points_features_to_the_template_and_ends_the_sub_motion():
    view, feat = _scene(2)
    tracker = _tracker(view, feat)
    tracker.track(feat, HANDLE, TARGET)
    live = feat.clone().requires_grad_(True)
    loss = tracker.motion_loss(live, HANDLE, TARGET)
    assert float(loss.detach()) == pytest.approx(_loss_at(tracker, feat, tracker.pos[0]), rel=1e-5)
    (grad,) = torch.autograd.grad(loss, [live])
    assert grad.abs().sum() > 0 and float(tracker.loss_ini[0]) == pytest.approx(float(loss.detach()), rel=1e-6)
    for _ in range(SUBSTEPS - 1):
        assert tracker.substep != 0
        tracker.motion_loss(feat, HANDLE, TARGET)
    assert tracker.substep == 0, "a sub-motion ends after SUBSTEPS steps"


def _after_a_sub_motion(seed: int, **settings) -> tuple[torch.Tensor, FreeDrag]:
    """A tracker that chose its first next point on `_scene(seed)` and was supervised for a whole sub-motion
    on the same, unmoved map."""
    view, feat = _scene(seed)
    tracker = _tracker(view, feat, **settings)
    tracker.track(feat, HANDLE, TARGET)
    for _ in range(SUBSTEPS):
        tracker.motion_loss(feat, HANDLE, TARGET)
    return feat, tracker


def test_the_template_learns_from_a_trusted_match_by_the_logistic_weight():
    feat, tracker = _after_a_sub_motion(3)
    pos = tracker.pos[0].clone()
    # the content followed exactly: the handle's patch now sits at pos (a whole-pixel shift of the map)
    shift = round(float(pos[1])) - 6
    followed = torch.roll(feat, shifts=shift, dims=2)
    old = tracker.template.clone()
    loss_end = _loss_at(tracker, followed, pos)
    L = float(tracker.expected[0])
    weight = 1 / (1 + math.exp(math.log(9) / (0.6 * L) * (loss_end - 0.2 * L)))
    tracker.track(followed, HANDLE, TARGET)
    assert float(tracker.loss_end[0]) == pytest.approx(loss_end, rel=1e-5)
    patch = tracker._patch(followed, pos[None], (0, 0))
    assert torch.allclose(tracker.template, weight * patch + (1 - weight) * old, atol=1e-6)


def test_a_bad_match_backtracks_to_where_the_feature_still_is():
    # a first move of more than 0.5 px; the content did not move: ℓ stays high, never below ℓ_ini
    feat, tracker = _after_a_sub_motion(4, ratio=1.0)
    ahead = float(tracker.pos[0, 1])    # supervision leaves the next point where the sub-motion put it
    tracker.track(feat, HANDLE, TARGET)
    assert float(tracker.loss_end[0]) >= 0.5 * float(tracker.expected[0])
    pos = tracker.pos[0]
    assert ahead - 6 > 0.5 and pos[0] == 12 and abs(float(pos[1]) - 6) < abs(ahead - 6) and abs(float(pos[1]) - 6) <= 0.31, \
        "back on the line to the best match, the handle's unmoved feature"


def test_a_converging_sub_motion_stays():
    feat, tracker = _after_a_sub_motion(5)
    tracker.loss_ini = torch.tensor([1e9], dtype=torch.float64)   # the loss went down since the sub-motion began
    before = tracker.pos.clone()
    tracker.track(feat, HANDLE, TARGET)
    assert torch.equal(tracker.pos, before)


def test_settings_are_validated_and_the_name_is_offered_everywhere():
    view, feat = _scene(6)
    with pytest.raises(ValueError):
        _tracker(view, feat, ratio=0)
    assert methods.get("freedrag-ms") is FreeDrag and DragConfig(tracker="freedrag-ms").tracker == "freedrag-ms"
    assert set(_tracker(view, feat).state()) >= {"pos", "template", "counters"}


def test_a_drag_on_the_bundled_model_arrives_with_its_handle_on_the_target():
    G = load_generator(str(BUNDLED))
    s = DragSession(G, seed=0, config=DragConfig(lr=4e-3, tracker="freedrag-ms"))
    s.set_points([(60, 70)], [(68, 70)])
    results = list(s.run(max_steps=150, render_every=0))
    assert results[-1].end == "arrived" and results[-1].distances[0] <= 2
    assert len({r.handles[0] for r in results}) >= 3, "the handle moved in several bounded sub-motions"


@pytest.mark.parametrize("tracker,scale", [("official", 1.0), ("freedrag-ms", FreeDrag.lr_scale)])
def test_freedrag_steps_are_lr_scale_times_the_drag_step_size_and_resume_so(tracker, scale):
    """Adam's first step moves every latent entry with a gradient by the step size: 4× DragConfig.lr for
    FreeDrag; the drag (and so its recipe) still records DragConfig.lr, and a resumed drag keeps the scale."""
    G = load_generator(str(BUNDLED))
    lr = 1e-3
    s = DragSession(G, seed=0, config=DragConfig(lr=lr, tracker=tracker))
    s.set_points([(60, 70)], [(68, 70)])
    before = s.ws
    s.step()
    moved = (s.ws - before).abs()
    assert moved.max().item() == pytest.approx(lr * scale, rel=1e-3)
    snap = s.snapshot()
    assert snap.drag.lr == lr
    resumed = DragSession.from_snapshot(G, snap)
    before = resumed.ws
    resumed.step()
    assert (resumed.ws - before).abs().max().item() <= lr * scale * 1.5
    assert (resumed.ws - before).abs().max().item() > lr * scale * 0.5
