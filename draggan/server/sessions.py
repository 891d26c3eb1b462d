"""Idle and closed sessions released on time: the app's session reaper.

Gradio keeps a session's `gr.State` until its `time_to_live` passes since the value was last *replaced*
(not used), and for an hour after its tab closed. Neither bounds a public server: most events change the
`UIState` in place, so an active visitor's state would expire mid-edit under a short TTL, while closed tabs
hold their frames, files and private models for an hour. The reaper sweeps Gradio's session table instead,
once a second, using the time of each session's last request:

- a session whose tab closed (Gradio's heartbeat ended) is released `DRAGGAN_CLOSED_SESSION_TTL_S` after its
  last request, even with a job running (the job is stopped);
- any other session is released after `DRAGGAN_SESSION_TTL_S` without a request, unless a job of it runs.

Releasing runs every state's `delete_callback` (`handlers.release`: job stopped, frames, files and private
model dropped), removes the session from Gradio's table and then hands freed memory back (`memory.py`).
Given Gradio's cache folder, it also ages its files out (`tempdir.age_out`, every `DRAGGAN_FILE_TTL_S` or
30 s), since Gradio's own `delete_cache` misses the outputs it did not record.
A later request of an expired session starts from an empty state ("Load a model first").
"""

from __future__ import annotations

import datetime
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from .memory import trim_memory
from .tempdir import age_out


def _busy(session: Any) -> bool:
    """Whether a state of the session runs a job (a `UIState` whose `job` is set; read by name, the server
    imports nothing of the service)."""
    values = getattr(session, "state_data", {}).values()
    return any(getattr(v, "job", None) is not None for v in values)


def sweep(holder: Any, ttl_s: float, closed_ttl_s: float, now: datetime.datetime | None = None,
          errors: list[str] | None = None) -> int:
    """Release the sessions of Gradio's `StateHolder` that are due (see the module docstring); returns how many.
    A session whose release fails is removed all the same (the failure is appended to `errors`)."""
    now = now or datetime.datetime.now()
    released = 0
    for session_id in list(holder.session_data):
        session = holder.session_data.get(session_id)
        last = holder.time_last_used.get(session_id)
        if session is None:
            continue
        closed = bool(getattr(session, "is_closed", False))
        idle = (now - last).total_seconds() if last is not None else float("inf")
        if idle <= (closed_ttl_s if closed else ttl_s) or (not closed and _busy(session)):
            continue
        try:
            holder.delete_state(session_id)
        except Exception as exc:   # one bad session must not keep the others (or itself) alive
            if errors is not None:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            with holder.lock:
                holder.session_data.pop(session_id, None)
                holder.time_last_used.pop(session_id, None)
        released += 1
    if released:
        trim_memory()
    return released


class SessionReaper:
    """A daemon thread that calls `sweep` on a demo's sessions every `every_s` seconds until `stop()` or
    until the demo is garbage-collected."""

    def __init__(self, demo: Any, ttl_s: float, closed_ttl_s: float, every_s: float = 1.0,
                 files: Path | None = None, file_ttl_s: float | None = None) -> None:
        self._demo = weakref.ref(demo)
        self.ttl_s, self.closed_ttl_s, self.every_s = float(ttl_s), float(closed_ttl_s), float(every_s)
        self.files, self.file_ttl_s = files, file_ttl_s    # Gradio's cache folder, aged out as well
        self._files_due = 0.0
        self.released = 0
        self.errors: list[str] = []       # failed releases and sweeps (the first 100), for tests and the soak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="draggan-session-reaper", daemon=True)

    def start(self) -> SessionReaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def sweep_now(self) -> int:
        """One sweep of the demo's sessions now (0 before the app is launched)."""
        demo = self._demo()
        holder = getattr(demo, "state_holder", None) if demo is not None else None
        if holder is None:
            return 0
        errors: list[str] = []
        count = sweep(holder, self.ttl_s, self.closed_ttl_s, errors=errors)
        self.released += count
        self.errors.extend(errors[:100 - len(self.errors)])
        if self.files is not None and self.file_ttl_s is not None and time.monotonic() >= self._files_due:
            self._files_due = time.monotonic() + min(self.file_ttl_s, 30.0)
            keep = set().union(*(getattr(b, "keep_in_cache", set()) for b in list(demo.blocks.values())))
            age_out(self.files, self.file_ttl_s, keep)
        return count

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            if self._demo() is None:
                return
            try:
                self.sweep_now()
            except Exception as exc:   # a sweep must never end the reaper; the next one retries
                if len(self.errors) < 100:
                    self.errors.append(f"sweep: {type(exc).__name__}: {exc}"[:300])
