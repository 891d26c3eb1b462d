"""One running job per visitor: a registry of the drags, inversions and replays running, keyed by visitor.

A visitor is known by two keys, and a job holds both while it runs: its Gradio session (one per page load)
and its client address, so that opening more tabs does not take more of the shared job slots. The address is
the connection's peer, except when that peer is a proxy on a loopback or private network (a Space's, or a
reverse proxy on the same host): then it is the first address of the `X-Forwarded-For` header, the client as
the outermost proxy saw it. A header from a public peer is ignored, since anyone can write one.

`Visitors.claim(request, what)` takes the slots atomically or raises `UserError` naming what already runs;
the returned `Slot` gives them back on `release()` or at the end of a `with` block (the event handlers hold it
in a `with` around the whole job, so a failure or a closed connection frees it too). A call without a request
(in-process use, tests) has no keys and is never refused here; the per-session check stays `ensure_idle`.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from ..errors import UserError

FORWARDED = "x-forwarded-for"


def _proxy(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_loopback or address.is_private


def client_address(request: Any) -> str | None:
    """The visitor's address from a `gr.Request` (see the module docstring); None if it has none."""
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    if not host:
        return None
    headers = getattr(request, "headers", None) or {}
    forwarded = headers.get(FORWARDED, "") if hasattr(headers, "get") else ""
    if forwarded and _proxy(host):
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return str(host)


def visitor_keys(request: Any) -> tuple[str, ...]:
    """The keys a job of this request holds: its session and its client address (either may be missing)."""
    if request is None:
        return ()
    keys = []
    session = getattr(request, "session_hash", None)
    if session:
        keys.append(f"session:{session}")
    address = client_address(request)
    if address:
        keys.append(f"address:{address}")
    return tuple(keys)


class Slot:
    """A claimed job slot; `release()` (or leaving the `with` block) gives it back, once."""

    def __init__(self, registry: Visitors, keys: tuple[str, ...]) -> None:
        self._registry, self.keys = registry, keys
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._registry._free(self.keys)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class Visitors:
    """The registry (thread-safe; one per app, held by `Studio`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}      # key -> what runs under it

    def claim(self, request: Any, what: str) -> Slot:
        """Take this visitor's job slot for `what` ("a drag", "a photo inversion", ...), or raise `UserError`."""
        keys = visitor_keys(request)
        with self._lock:
            busy = next((self._running[k] for k in keys if k in self._running), None)
            if busy is not None:
                raise UserError(f"You already have {busy} running (in this or another tab): wait for it to end "
                                f"or stop it, then try {what} again.")
            for key in keys:
                self._running[key] = what
        return Slot(self, keys)

    def _free(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            for key in keys:
                self._running.pop(key, None)

    def running(self) -> dict[str, str]:
        """A copy of what runs, by key (for tests and the soak bench)."""
        with self._lock:
            return dict(self._running)
