"""Soak the launched app with visitors that behave like browser tabs, and report what the server kept.

Usage: python -m bench.soak [--minutes 3] [--clients 4] [--model cartoon-faces-64] [--steps 8]
                            [--idle 40] [--no-trim]

The app runs in a child process on 127.0.0.1 only (CPU, offline), with short expiries so a short idle is
enough: `DRAGGAN_CLOSED_SESSION_TTL_S=2`, `DRAGGAN_FILE_TTL_S=10`, `GRADIO_HEARTBEAT_INTERVAL=1`, and its
own `DRAGGAN_TEMP_DIR`. Each client thread is a distinct visitor (its own `X-Forwarded-For` address, which the
app trusts from a loopback peer) and repeats visits until the time is up: open the page (heartbeat + page
load event), click a handle and its target, Start a drag and wait for it, export a PNG and download it,
sometimes pick a new seed, then close the tab (end the heartbeat). It speaks Gradio's own HTTP protocol
(`/gradio_api/queue/join`, the session's event stream, `/heartbeat`), as the page does.

Reported: visits, actions, errors, p50/p95 latency per action, the server's resident memory after the first
visit (warm-up) and at the end of the soak and after the idle, its temp files at the same points, and the
sessions it still holds. `--no-trim` turns allocator trimming off in the server (to measure what it gives).
Not a test (tests/test_soak.py is the short one in the suite): figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

EVENTS = {  # name: (component attribute of the page, event)
    "load": (None, "load"), "click": ("image", "select"), "start": ("start", "click"),
    "export_png": ("export_png", "click"), "seed": ("seed", "submit"),
}


def event_indices(demo: Any) -> dict[str, int]:
    """fn_index of each event the visitors trigger, found by its trigger (component id, event name)."""
    page = demo.page
    ids = {"load": demo._id, "click": page.image._id, "start": page.start._id,
           "export_png": page.export_buttons["png"]._id, "seed": page.seed._id}
    found = {}
    for index, fn in demo.fns.items():
        for block_id, event in fn.targets:
            for name, (_, wanted) in EVENTS.items():
                if block_id == ids[name] and event == wanted and name not in found:
                    found[name] = index
    missing = set(EVENTS) - set(found)
    if missing:
        raise RuntimeError(f"events not found in the app: {sorted(missing)}")
    return found


class GradioError(RuntimeError):
    """An event that failed on the server (or whose stream broke)."""


class Tab:
    """One browser tab: a session hash, a heartbeat while open, events sent through the queue."""

    def __init__(self, url: str, address: str, timeout_s: float = 120.0) -> None:
        self.url, self.session = url.rstrip("/") + "/", uuid.uuid4().hex[:11]
        self.http = httpx.Client(headers={"x-forwarded-for": address}, timeout=timeout_s)
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        try:
            with self.http.stream("GET", f"{self.url}gradio_api/heartbeat/{self.session}") as response:
                for _ in response.iter_lines():
                    if self._closed.is_set():
                        return
        except httpx.HTTPError:
            return

    def call(self, fn_index: int, data: list, event_data: Any = None, trigger_id: int | None = None) -> list:
        """Send one event and wait for its result (the outputs' data); `GradioError` when it failed."""
        body = {"data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": trigger_id,
                "session_hash": self.session}
        joined = self.http.post(f"{self.url}gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            raise GradioError(f"join: HTTP {joined.status_code} {joined.text[:200]}")
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", f"{self.url}gradio_api/queue/data",
                              params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != event_id:
                    continue
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if not message.get("success", False) or output.get("error"):
                        raise GradioError(str(output.get("error") or message)[:300])
                    return output.get("data", [])
        raise GradioError("the event stream ended before the event completed")

    def download(self, file_data: dict) -> bytes:
        url = file_data.get("url") or f"{self.url}gradio_api/file={file_data['path']}"
        response = self.http.get(url)
        if response.status_code != 200:
            raise GradioError(f"download: HTTP {response.status_code}")
        return response.content

    def close(self) -> None:
        self._closed.set()
        self.http.close()


class Stats:
    """Latency per action and errors, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.errors: list[str] = []
        self.visits = 0

    def timed(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except (GradioError, httpx.HTTPError, KeyError, ValueError) as exc:
            with self.lock:
                self.errors.append(f"{name}: {exc}")
            raise
        finally:
            with self.lock:
                self.latency.setdefault(name, []).append(time.perf_counter() - start)

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        return {"visits": self.visits, "actions": sum(len(v) for v in self.latency.values()),
                "errors": len(self.errors), "first_errors": self.errors[:5],
                "latency_s": {k: {"n": len(v), "p50": round(statistics.median(v), 3), "p95": round(pct(v, 0.95), 3)}
                              for k, v in sorted(self.latency.items())}}


def visit(url: str, fns: dict[str, int], ids: dict[str, int], model: str, address: str, stats: Stats,
          rng: random.Random, steps: int = 8) -> None:
    """One tab's life: open, two clicks, a drag, a PNG export and its download, maybe a new seed, close."""
    tab = Tab(url, address)
    try:
        seed = rng.randrange(1000)
        out = stats.timed("load", tab.call, fns["load"], [model, seed, 0.7, "w+", 0.002, steps, 4, 20.0])
        view = out[1]
        width = height = 512
        if isinstance(view, dict) and view.get("path"):
            from PIL import Image
            import io
            width, height = Image.open(io.BytesIO(tab.download(view))).size
        for fx, fy in ((0.35, 0.4), (0.55, 0.5)):
            point = [int(fx * width), int(fy * height)]
            # inputs: state, and the seed box, ψ and latent space as shown (a click applies a typed seed first)
            stats.timed("click", tab.call, fns["click"], [None, seed, 0.7, "w+"],
                        {"index": point, "value": None, "selected": True}, ids["click"])
        stats.timed("drag", tab.call, fns["start"], [None], None, ids["start"])
        exported = stats.timed("export", tab.call, fns["export_png"], [None, None], None, ids["export_png"])  # state, AI mark
        file_data = exported[0]["value"] if isinstance(exported[0], dict) and "value" in exported[0] else exported[0]
        stats.timed("download", tab.download, file_data)
        if rng.random() < 0.5:
            stats.timed("new_seed", tab.call, fns["seed"], [None, seed + 1, 0.7, "w+"], None, ids["seed"])
        with stats.lock:
            stats.visits += 1
    except (GradioError, httpx.HTTPError, KeyError, ValueError, TypeError, IndexError):
        pass
    finally:
        tab.close()


def soak(url: str, fns: dict[str, int], ids: dict[str, int], model: str, clients: int, seconds: float,
         steps: int = 8, max_visits: int | None = None) -> Stats:
    """`clients` threads (one visitor address each) repeating visits until `seconds` pass (or `max_visits`
    each); returns their stats. Bounded: every thread stops by itself."""
    stats = Stats()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        rng = random.Random(k)
        done = 0
        while time.monotonic() < deadline and (max_visits is None or done < max_visits):
            visit(url, fns, ids, model, f"192.0.2.{10 + k}", stats, rng, steps)
            done += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    [t.start() for t in threads]
    [t.join(timeout=seconds + 300) for t in threads]
    return stats


def trigger_ids(demo: Any) -> dict[str, int]:
    page = demo.page
    return {"click": page.image._id, "start": page.start._id, "export_png": page.export_buttons["png"]._id,
            "seed": page.seed._id}


# ------------------------------------------------------------------ the server child


def serve(no_trim: bool) -> None:
    """Child process: launch the app on 127.0.0.1, print one JSON line (port, events, pid), serve until
    stdin closes."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    import app
    from draggan import settings
    from draggan.server import memory
    from draggan.service.studio import Studio

    if no_trim:
        memory._malloc_trim = lambda: None
    settings.reload()
    studio = Studio(device="cpu", hub_online=False)
    studio.apply_thread_policy()
    studio.preload()
    demo = app.build_demo(studio)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    print(json.dumps({"port": port, "fns": event_indices(demo), "ids": trigger_ids(demo), "pid": os.getpid()}),
          flush=True)
    sys.stdin.read()
    demo.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def file_count(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default="cartoon-faces-64")
    parser.add_argument("--steps", type=int, default=8, help="max steps of each drag")
    parser.add_argument("--idle", type=float, default=40.0, help="seconds of idle after the soak")
    parser.add_argument("--no-trim", action="store_true", help="turn malloc_trim off in the server")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.no_trim)
        return
    temp = Path(tempfile.mkdtemp(prefix="draggan-soak-"))
    env = dict(os.environ, DRAGGAN_TEMP_DIR=str(temp), GRADIO_TEMP_DIR=str(temp / "gradio"),
               DRAGGAN_CLOSED_SESSION_TTL_S="2", DRAGGAN_FILE_TTL_S="10", GRADIO_HEARTBEAT_INTERVAL="1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", DRAGGAN_CONCURRENCY=str(args.clients),
               DRAGGAN_TORCH_THREADS="1")
    cmd = [sys.executable, "-m", "bench.soak", "--serve"] + (["--no-trim"] if args.no_trim else [])
    server = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        info = json.loads(server.stdout.readline())
        url, pid = f"http://127.0.0.1:{info['port']}/", info["pid"]
        files_start = file_count(temp)
        warm = soak(url, info["fns"], info["ids"], args.model, 1, 600, args.steps, max_visits=1)
        time.sleep(8)
        after_first = (rss_mb(pid), file_count(temp))
        stats = soak(url, info["fns"], info["ids"], args.model, args.clients, 60 * args.minutes, args.steps)
        after_soak = (rss_mb(pid), file_count(temp))
        time.sleep(args.idle)
        after_idle = (rss_mb(pid), file_count(temp))
        report = {"clients": args.clients, "minutes": args.minutes, "model": args.model, "trim": not args.no_trim,
                  **stats.summary(), "warmup_errors": warm.errors[:3],
                  "rss_mb": {"after_first_visit": round(after_first[0]), "after_soak": round(after_soak[0]),
                             "after_idle": round(after_idle[0]),
                             "idle_minus_first": round(after_idle[0] - after_first[0])},
                  "temp_files": {"start": files_start, "after_first_visit": after_first[1],
                                 "after_soak": after_soak[1], "after_idle": after_idle[1]},
                  "session_folders_left": len(list((temp / "sessions").glob("s-*")))}
        print(json.dumps(report, indent=1))
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
