"""`draggan.training.loop`: the trainers' shared loop, periodic actions and SIGTERM stop."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from draggan.data import procedural
from draggan.training import loop
from draggan.training.keypoints import KeypointTrainConfig, train_regressor
from draggan.training.train import TrainConfig, Trainer


class _Clock:
    """A fake `time.time`: it moves only when a test sets `now`."""

    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


def test_periodic_actions_and_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(loop.time, "time", clock.time)
    events: list[str] = []

    def step() -> None:
        clock.now += 1
        events.append("step")

    stopped = loop.run_loop(step, lambda: False, [loop.Periodic(2, lambda: events.append("a")),
                                                  loop.Periodic(3, lambda: events.append("b"))], max_seconds=6)
    assert stopped is False
    assert events == ["step", "step", "a", "step", "b", "step", "a", "step", "step", "a", "b"]


def test_finished_is_checked_before_every_step() -> None:
    count = [0]
    loop.run_loop(lambda: count.__setitem__(0, count[0] + 1), lambda: count[0] >= 3)
    assert count[0] == 3
    loop.run_loop(lambda: pytest.fail("no step when already finished"), lambda: True)


def test_sigterm_ends_after_the_current_step_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    steps = []

    def step() -> None:
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    assert loop.run_loop(step, lambda: len(steps) >= 100) is True
    assert len(steps) == 2
    assert signal.getsignal(signal.SIGTERM) == before


def test_off_the_main_thread_no_handler_is_installed() -> None:
    seen = []

    def worker() -> None:
        with loop.sigterm_stops() as stop:
            seen.append((signal.getsignal(signal.SIGTERM), stop.is_set()))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(before, False)]


def test_both_trainers_checkpoint_when_sigterm_arrives(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM in the middle of a run still leaves a resumable checkpoint with the steps done so far."""
    trainer = Trainer(TrainConfig(run_dir=str(tmp_path / "g"), resolution=16, w_dim=16, mapping_layers=2,
                                  channel_base=64, channel_max=16, batch=2, total_kimg=1.0, log_seconds=0.0))
    original = trainer.train_step

    def train_step() -> float:
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original()

    monkeypatch.setattr(trainer, "train_step", train_step)
    trainer.run()
    assert torch.load(tmp_path / "g" / "checkpoint.pt", weights_only=False)["step"] == 2

    kp_cfg = KeypointTrainConfig(run_dir=str(tmp_path / "k"), resolution=16, channels=2, batch=2, total_kimg=1.0,
                                 log_seconds=0.0)
    calls = []
    real_render = procedural.render_z

    def render_z(z, resolution):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_render(z, resolution)

    monkeypatch.setattr(procedural, "render_z", render_z)
    train_regressor(kp_cfg)
    assert torch.load(tmp_path / "k" / "checkpoint.pt", weights_only=False)["step"] == 3
