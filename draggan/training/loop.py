"""The one training loop of the project's trainers (generator and keypoint regressor), and its SIGTERM stop.

`run_loop(step, finished, periodic, max_seconds)` calls `step()` until `finished()` is true, `max_seconds`
have passed since the loop started, or the process receives SIGTERM (then the current step completes first,
so `kill <pid>` loses nothing once the caller writes its final checkpoint). After each step, every
`Periodic(seconds, action)` whose period has elapsed since its last run (or since the loop started) runs once,
in the order given. SIGTERM is caught only while the loop runs and only in the main thread (Python delivers
signals there); the previous handler is restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch


@dataclasses.dataclass
class Periodic:
    """`action()` is run after a step once `seconds` have passed since it last ran."""

    seconds: float
    action: Callable[[], object]


@contextlib.contextmanager
def sigterm_stops() -> Iterator[threading.Event]:
    """Inside the block, SIGTERM sets the yielded event instead of killing the process (main thread only)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_loop(step: Callable[[], None], finished: Callable[[], bool], periodic: Sequence[Periodic] = (),
             max_seconds: float | None = None) -> bool:
    """Run `step` until `finished()`, `max_seconds` or SIGTERM; returns whether SIGTERM ended it."""
    start = time.time()
    last = [start] * len(periodic)
    with sigterm_stops() as stop:
        while not finished() and not stop.is_set():
            step()
            now = time.time()
            for i, task in enumerate(periodic):
                if now - last[i] >= task.seconds:
                    task.action()
                    last[i] = now
            if max_seconds is not None and now - start >= max_seconds:
                break
        return stop.is_set()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """`torch.save(state)` to `path` atomically (a temporary file renamed into place), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path
