"""A local stand-in for ZeroGPU's device service, the HTTP API that the real `spaces` package calls.

`spaces` (0.51, `spaces/zero/api.py`) talks to `SPACES_ZERO_DEVICE_API_URL`: `POST /startup-report` when the
app launches; `POST /schedule` before every `@spaces.GPU` call (a grant: `allowToken`, GPU index and UUID, as
JSON; or a refusal: HTTP 429 with `{left, wait}` and an `X-Approve-Result` header when the quota is spent,
503 when no GPU is free); `POST /allow?allowToken=&pid=` from the forked worker before it runs, which is how
the real service learns which process gets the GPU; `POST /release?allowToken=&fail=` when the call ends.

What the real service does when a grant's time runs out is take the GPU away by ending the worker process;
this stand-in does the same with SIGKILL. `script` says what each successive `/schedule` gets:
"ok" (a grant), "kill=S" (a grant whose worker is killed S seconds after it was allowed, unless released
before), "quota" (429, the visitor's daily quota exceeded), "too-long" (429 with a negative wait: the requested duration
is over the maximum) or "busy" (503, no GPU free); once the script is used up every call is "ok". `auth` is
what the service says of the visitor (`X-Authenticated`: "regular", "pro" or None for anonymous).
Every request is recorded in `calls` as (path, query parameters).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class DeviceService:
    """The stand-in, served from a thread on 127.0.0.1 (`url`) until `close()`."""

    def __init__(self, script: list[str] | None = None, quota_left_s: int = 3, quota_wait_s: int = 300,
                 auth: str | None = None) -> None:
        self.script = list(script or [])
        self.auth = auth
        self.quota_left_s, self.quota_wait_s = quota_left_s, quota_wait_s
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.killed: list[int] = []
        self._grants: dict[str, dict] = {}    # allow token -> {"kill": seconds | None, "released": bool}
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:        # noqa: N802 (http.server's naming)
                service._answer(self)

            do_GET = do_POST                  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="zerogpu-stand-in", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "DeviceService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.calls.append((parts.path, query))
        if parts.path == "/startup-report":
            return self._send(request, 200, {})
        if parts.path == "/schedule":
            return self._schedule(request)
        if parts.path == "/allow":
            return self._allow(request, query)
        if parts.path == "/release":
            with self._lock:
                grant = self._grants.get(query.get("allowToken", ""))
                if grant is None:
                    return self._send(request, 404, {"detail": "unknown token"})
                grant["released"] = True
            return self._send(request, 200, {})
        if parts.path == "/queue-size":
            return self._send(request, 200, 0)
        return self._send(request, 404, {"detail": "not found"})

    def _schedule(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            action = self.script.pop(0) if self.script else "ok"
        auth = {"X-Authenticated": self.auth} if self.auth else {}
        if action in ("quota", "too-long"):
            wait = self.quota_wait_s if action == "quota" else -1
            result = "quota-exceeded" if action == "quota" else "illegal-duration"
            return self._send(request, 429, {"left": self.quota_left_s, "wait": wait},
                              headers={"X-Approve-Result": result, **auth})
        if action == "busy":
            return self._send(request, 503, {"detail": "no GPU"})
        kill = float(action.split("=", 1)[1]) if action.startswith("kill=") else None
        token = uuid.uuid4().hex
        with self._lock:
            self._grants[token] = {"kill": kill, "released": False}
        # idle=False: the GPU is not the one a previous worker holds, so spaces forks a fresh worker per call.
        self._send(request, 200, {"idle": False, "nvidiaIndex": 0, "nvidiaUUID": "GPU-stand-in",
                                  "allowToken": token}, headers=auth)

    def _allow(self, request: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        with self._lock:
            grant = self._grants.get(query.get("allowToken", ""))
        if grant is None:
            return self._send(request, 404, {"detail": "unknown token"})
        pid = int(query["pid"])
        if grant["kill"] is not None:
            def end_worker() -> None:
                with self._lock:
                    if grant["released"]:
                        return
                    self.killed.append(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            timer = threading.Timer(grant["kill"], end_worker)
            timer.daemon = True
            timer.start()
        self._send(request, 200, {})

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.end_headers()
        request.wfile.write(data)
