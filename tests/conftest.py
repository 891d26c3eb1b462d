"""Shared test helpers: fixture paths and a loader for NVIDIA's reference outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from draggan import settings

DATA = Path(__file__).parent / "data"


def fixture_path(name: str) -> Path:
    """Path of a fixture file in tests/data (copied from NVIDIA-format fixtures)."""
    return DATA / name


@pytest.fixture(autouse=True)
def _deterministic_cpu() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _settings_per_test():
    """`draggan.settings` is read once per process; a test that sets a `DRAGGAN_*` variable calls
    `settings.reload()` after it, and every test starts and ends with settings read from its own environment
    (this fixture is set up before `monkeypatch` and torn down after it has restored the environment)."""
    settings.reload()
    yield
    settings.reload()


def private_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the Hub cache (`HF_HOME`) and the converted cache (`DRAGGAN_CACHE`) into `tmp_path`, with
    huggingface_hub's offline mode on, and reload `draggan.settings` so the loaders see it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("DRAGGAN_CACHE", str(tmp_path / "converted"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    settings.reload()


def load_reference(name: str) -> dict[str, np.ndarray]:
    """The `*.ref.npz` reference outputs computed by NVIDIA's own implementation."""
    with np.load(DATA / f"{name}.ref.npz") as ref:
        return {k: ref[k] for k in ref.files}


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's many tiny torch steps on one thread: several times faster than two threads on
    oversubscribed shared cores, and bitwise-reproducible step sequences. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
