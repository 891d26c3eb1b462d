"""Shared test helpers: fixture paths, a loader for NVIDIA's reference outputs, and where Chromium is.

The pytest header and summary say whether the browser tests can run (a Chromium was found: `DRAGGAN_CHROMIUM`,
the system's `/usr/bin/chromium` / `chromium` on PATH, or Playwright's own download) and, when they were
skipped, say so plainly at the end of the run instead of hiding it among the skips.
"""

from __future__ import annotations

import glob
import os
import shutil
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


CHROMIUM_HINT = ("install one with `apt-get install chromium` or `python -m playwright install chromium`, "
                 "or point DRAGGAN_CHROMIUM at a Chromium binary")


def find_chromium() -> str | None:
    """A Chromium executable for the browser tests: `DRAGGAN_CHROMIUM`, the system's, or Playwright's; None if none."""
    candidates = [os.environ.get("DRAGGAN_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                  shutil.which("chromium-browser")]
    browsers = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(Path("~/.cache/ms-playwright").expanduser())
    candidates += sorted(glob.glob(os.path.join(browsers, "chromium-*", "chrome-linux*", "chrome")), reverse=True)
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def pytest_report_header(config) -> str:
    chromium = find_chromium()
    if chromium:
        return f"browser tests: run with Chromium at {chromium}"
    return f"browser tests: WILL BE SKIPPED, no Chromium found ({CHROMIUM_HINT})"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_browser" in str(r.nodeid or r.fspath)]
    if skipped:
        reason = "no Chromium found" if find_chromium() is None else "see the skip reasons above"
        terminalreporter.write_sep("!", f"browser tests did NOT run ({reason}); {CHROMIUM_HINT}", yellow=True)
