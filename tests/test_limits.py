"""The one limits table (draggan/limits.py) and the UI helpers that use it: each refusal names its field."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from draggan import limits
from draggan.limits import LIMITS, LimitError
from draggan.service import handlers
from draggan.service.handlers import UserError


def test_the_table():
    assert LIMITS.point_pairs == 64 and LIMITS.drags == 200 and LIMITS.max_steps.hi == 2000
    assert LIMITS.lr.lo == 0 and LIMITS.lr.lo_open and LIMITS.lr.hi == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        LIMITS.drags = 10**9
    assert handlers.LIMITS is LIMITS, "the UI reads the same table"


@pytest.mark.parametrize("name, value, message", [
    ("lr", float("nan"), "lr must be a finite number, got nan"),
    ("lr", "nan", "lr must be a finite number"),
    ("lr", 0, r"lr must be between 0 \(exclusive\) and 1, got 0"),
    ("lr", 1.5, "lr must be between"),
    ("lr", "abc", "lr must be a number, got 'abc'"),
    ("lr", True, "lr must be a number"),
    ("lr", 10**400, "lr must be a number"),
    ("max_steps", 1e9, "max_steps must be between 1 and 2000, got 1000000000"),
    ("max_steps", 2.5, "max_steps must be a whole number, got 2.5"),
    ("seed", -1, "seed must be between 0 and 4294967295"),
    ("psi", float("inf"), "psi must be a finite number"),
    ("render_every", -1, "render_every must be between 0 and 1000"),
    ("mask_lambda", -1, "mask_lambda must be between 0 and 10000"),
])
def test_numbers_are_refused_by_name(name, value, message):
    with pytest.raises(LimitError, match=message) as info:
        limits.check_number(name, value)
    assert info.value.field == name


def test_numbers_in_range_pass():
    assert limits.check_number("lr", "1") == 1.0 and limits.check_number("max_steps", 2000.0) == 2000
    assert isinstance(limits.check_number("seed", 7), int)


def _deep_text(depth: int) -> str:
    return "[" * depth + "1, 2, 3, 4" + "]" * depth


@pytest.mark.parametrize("points, message", [
    ([[float("nan"), 1, 2, 3]], "point pair 1: hx must be a finite number"),
    ("[[1, 2, 3, NaN]]", "point pair 1: ty must be a finite number"),
    ([[1, 2, 3, 4]] * 5000, "at most 64 point pairs per drag, got 5000"),
    (json.dumps([[1, 2, 3, 4]] * 1000), "at most 64 point pairs per drag, got 1000"),
    (_deep_text(5000), "points is nested too deeply"),
    ([[[[[1, 2]]], [3, 4]]], "points is nested too deeply"),
    ("x" * (LIMITS.points_bytes + 1), "points is larger than"),
    ("not json", "points is not valid JSON"),
    ([[1, 2, 3]], "point pair 1 must be"),
    ([], "at least one"),
    ({"a": 1}, "list of"),
], ids=["nan", "nan-json", "5000-pairs", "1000-pairs-json", "5000-deep-json", "deep-list", "huge-text",
        "not-json", "three-numbers", "empty", "dict"])
def test_points_are_refused_with_a_specific_message(points, message):
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match=message):
        limits.parse_points(points)
    with pytest.raises(UserError, match=message):
        handlers.parse_points(points)
    assert time.perf_counter() - t0 < 2


def test_points_parse_both_shapes():
    assert limits.parse_points("[[1, 2, 3, 4]]") == ([(1.0, 2.0)], [(3.0, 4.0)])
    assert limits.parse_points([[[1, 2], [3, 4]], (5, 6, 7, 8)]) == ([(1.0, 2.0), (5.0, 6.0)],
                                                                     [(3.0, 4.0), (7.0, 8.0)])
    assert len(limits.parse_points([[1, 2, 3, 4]] * 64)[0]) == 64


def test_check_points():
    with pytest.raises(UserError, match="not a finite point"):
        handlers.check_points([(float("nan"), 1.0)], [(2.0, 2.0)], 64, 64)
    with pytest.raises(UserError, match="at most 64 point pairs"):
        handlers.check_points([(1.0, 1.0)] * 65, [(2.0, 2.0)] * 65, 64, 64)
    with pytest.raises(UserError, match="outside the 64×64"):
        handlers.check_points([(1.0, 1.0)], [(64.0, 2.0)], 64, 64)
    handlers.check_points([(0.0, 0.0)], [(63.0, 63.0)], 64, 64)


def test_json_depth_ignores_brackets_in_strings():
    assert limits.json_depth('{"a": "[[[[[[", "b": [[1]]}') == 3
    assert limits.json_depth('["\\"[[[["]') == 1


def test_ui_settings_use_the_table():
    with pytest.raises(UserError, match="max_steps must be between 1 and 2000"):
        handlers.make_config(lr=1e-3, max_steps=5000, mask_lambda=1)
    with pytest.raises(UserError, match="lr must be a finite number"):
        handlers.make_config(lr=float("nan"), max_steps=5, mask_lambda=1)
    assert handlers.make_config(lr=1.0, max_steps=2000, mask_lambda=0).max_steps == 2000


def test_the_page_fields_read_their_bounds_from_the_table(monkeypatch):
    """Each number field's minimum, maximum and step are the limits table's; the drag settings reach the session
    on the visitor's edits only (`input`), so a value the server writes (a model's step size) is not sent back."""
    from _app_server import build_app

    from draggan.limits import LIMITS

    demo = build_app(monkeypatch)
    page = demo.page
    for name, field in [("seed", page.seed), ("psi", page.psi), ("lr", page.lr), ("max_steps", page.max_steps),
                        ("render_every", page.render_every), ("mask_lambda", page.mask_lambda),
                        ("inversion_steps", page.w_steps), ("inversion_steps", page.pti_steps)]:
        bounds = getattr(LIMITS, name).field()
        assert (field.minimum, field.maximum, field.step) == (bounds["minimum"], bounds["maximum"], bounds["step"]), name
    assert LIMITS.lr.field()["minimum"] > LIMITS.lr.lo and LIMITS.lr.lo_open, "the open end is not offered"
    update = demo.panels.model.update_params
    triggers = [(demo.blocks[block_id], event) for fn in demo.fns.values() if fn.fn == update
                for block_id, event in fn.targets]
    assert {event for _, event in triggers} == {"input"}
    assert {b for b, _ in triggers} == {page.lr, page.max_steps, page.render_every, page.mask_lambda, page.tracker}
