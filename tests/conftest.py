"""Shared test helpers: fixture paths and a loader for NVIDIA's reference outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"


def fixture_path(name: str) -> Path:
    """Path of a fixture file in tests/data (copied from NVIDIA-format fixtures)."""
    return DATA / name


@pytest.fixture(autouse=True)
def _deterministic_cpu() -> None:
    torch.manual_seed(0)


def load_reference(name: str) -> dict[str, np.ndarray]:
    """The `*.ref.npz` reference outputs computed by NVIDIA's own implementation."""
    with np.load(DATA / f"{name}.ref.npz") as ref:
        return {k: ref[k] for k in ref.files}
