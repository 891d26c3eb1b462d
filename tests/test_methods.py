"""Drag methods: one module each behind the `DragMethod` protocol, one registry that every reader uses, and a
new method is one class plus one registry entry (here registered by the test, as a new module would be)."""

from __future__ import annotations

import ast
import inspect
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from draggan.engine import DragConfig, DragSession, methods
from draggan.engine.methods import DragGeometry, DragMethod
from draggan.networks.stylegan2 import Generator

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ("name", "label", "help", "lr_scale", "keep_lambda", "replaces", "track", "arrived", "motion_loss",
            "state", "load_state")


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=512, channel_max=32)).eval().requires_grad_(False)


def test_every_registered_method_implements_the_protocol_in_a_module_of_its_own():
    assert methods.names() == ("official", "freedrag-ms", "freedrag-local") and methods.DEFAULT == "official"
    for name, method in methods.METHODS.items():
        assert method.name == name and method.label and method.help and "\n" not in method.help
        assert all(hasattr(method, attr) for attr in PROTOCOL), name
        assert method.lr_scale > 0 and method.keep_lambda >= 0
        assert Path(inspect.getfile(method)).parent == ROOT / "draggan" / "engine" / "methods"
    files = [inspect.getfile(m) for m in methods.METHODS.values()]
    assert len(set(files)) == len(files), "one module per method"
    retired = [r for m in methods.METHODS.values() for r in m.replaces]
    assert sorted(retired) == ["centroid", "freedrag"] and not set(retired) & set(methods.METHODS)


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_no_module_outside_a_methods_own_names_a_method_or_probes_its_attributes():
    """A table keyed by method name, or `getattr(method, ...)`, outside the method's module would be a second
    place to edit when a method is added or retired."""
    named = set(methods.names()) | {r for m in methods.METHODS.values() for r in m.replaces}
    own = {Path(inspect.getfile(m)) for m in methods.METHODS.values()}
    product = [ROOT / "app.py", *sorted((ROOT / "draggan").rglob("*.py"))]
    offenders = [f"{p.relative_to(ROOT)}: {sorted(_string_constants(p) & named)}" for p in product
                 if p not in own and _string_constants(p) & named]
    assert offenders == []
    for path in product:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
                target = ast.unparse(node.args[0])
                assert "method" not in target and "tracker" not in target, f"{path.name}: {ast.unparse(node)}"


class Stay:
    """A new method, for the test: no tracking, no motion (the loss is the features' mean), arrives after
    three steps; counts its steps in its state."""

    name = "test-stay"
    label = "Stay (test)"
    help = "Stay: a test method."
    lr_scale = 2.0
    keep_lambda = 0.0
    replaces = ("test-retired",)

    def __init__(self, geometry: DragGeometry, ref: torch.Tensor, feat0: torch.Tensor, handles_rc: torch.Tensor,
                 origin: tuple[int, int] = (0, 0)) -> None:
        self.steps = 0

    def track(self, feat, handles_rc, targets_rc, origin=(0, 0)) -> torch.Tensor:
        return handles_rc

    def arrived(self, distances: Sequence[float]) -> bool:
        return self.steps >= 3

    def motion_loss(self, feat, handles_rc, targets_rc, origin=(0, 0)) -> torch.Tensor:
        self.steps += 1
        return feat.mean()

    def state(self) -> dict[str, np.ndarray]:
        return {"steps": np.array(self.steps)}

    def load_state(self, state) -> None:
        self.steps = int(state["steps"])


def test_a_new_method_is_one_class_and_one_registry_entry(G, monkeypatch):
    monkeypatch.setitem(methods.METHODS, Stay.name, Stay)
    stay: DragMethod = Stay                                   # the protocol, as a type checker sees it
    assert (stay.label, "test-stay") in methods.choices() and methods.resolve("test-retired")[0] == "test-stay"
    s = DragSession(G, seed=0, config=DragConfig(lr=1e-3, tracker="test-stay"))
    s.set_points([(10, 10)], [(20, 10)])
    before = s.ws
    s.step()
    assert (s.ws - before).abs().max().item() == pytest.approx(2e-3, rel=1e-3), "Adam at lr × lr_scale"
    snap = pickle.loads(pickle.dumps(s.snapshot()))
    assert snap.drag.tracker == "test-stay" and int(snap.drag.tracker_state["steps"]) == 1
    resumed = DragSession.from_snapshot(G, snap)
    results = list(resumed.run(max_steps=10, render_every=0))
    assert results[-1].end == "arrived" and results[-1].step == 4, "its own arrival test, its state resumed"
    assert resumed.handles == [(10.0, 10.0)], "its own tracking"
