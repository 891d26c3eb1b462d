"""Two visitors at once, as the app runs them: the quick variant of the bench that measures it (the figures
themselves come from `python -m bench.concurrent_sessions --visitors 2 --model ffhq512`, never from a timed test)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def test_the_two_visitor_bench_runs_as_the_app_does_and_ends_with_its_figure():
    """The quick variant of `python -m bench.concurrent_sessions --visitors 2 --model ffhq512`: two visitors
    drag at once through `gpu.drag` with the app's thread policy and slots, and the output states each
    visitor's wait, step time and view gaps, ending with the line the issue reads."""
    model = str(Path(__file__).parent / "data" / "stylegan2-tiny-64.pkl")
    out = subprocess.run([sys.executable, "-m", "bench.concurrent_sessions", "--visitors", "2", "--model", model,
                          "--steps", "4"], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parents[1], env={**os.environ, "DRAGGAN_CONCURRENCY": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    rows = [json.loads(line) for line in lines[:-1]]
    assert [r["visitor"] for r in rows] == [1, 2] and all(r["views"] >= 1 for r in rows)
    assert all(r["longest_view_gap_s"] > 0 and r["waited_s"] >= 0 and r["slots"] == 2 for r in rows)
    gap = max(r["longest_view_gap_s"] for r in rows)
    assert re.fullmatch(r"two visitors at 64: longest view gap [0-9.]+ s", lines[-1])
    assert float(lines[-1].split()[-2]) == pytest.approx(gap, abs=0.006)
