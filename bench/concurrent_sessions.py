"""Drag step time with 1 and with N concurrent sessions in one process, as the app runs them (threads).

Usage: python -m bench.concurrent_sessions [--sessions 1 2 4] [--model cartoon-faces-128 | ffhq512]
                                           [--threads policy|default|K] [--steps 6] [--device cpu]

N threads share one generator (the app's shared cache) and each drags its own `DragSession` (W+, one handle
with a far target, so no drag stops early) for `--steps` steps after one warm-up step; they start together.
Threads: `policy` sets torch's process-wide count the way the app does at start-up for N concurrent jobs
(`draggan.server.threads.thread_policy`: `max(1, cores // N)`, cores from affinity and cgroup quota), `default`
leaves torch's own (all physical cores: the oversubscribed case), a number uses that. Each N runs in its own
subprocess, because torch's thread pool cannot shrink once it has grown. Reported per N: threads, median
seconds per step of one session, the slowest session's, and total steps per second of all sessions.
`ffhq512` is a random-weight generator with the FFHQ-512 config (`bench.generator`). Not a test.

`--visitors N` measures N visitors dragging at once as the app runs them instead: the thread policy and the
job slots of the app's start-up (`thread_policy` for this machine: DRAGGAN_CONCURRENCY jobs, the rest wait
for a slot), each visitor's drag through `gpu.drag` with the app's render policy, from a start 0.5 s apart.
Per visitor: seconds waited for a slot, median step, the longest time without a new view (from pressing
Start to the first view, between views, and to the last), and the drag's wall time; the output ends with
`two visitors at 512: longest view gap G s` (for N = 2 at 512 px).
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import threading
import time

import torch

from bench import allocate_as_the_app


def _generator(model: str, device: str) -> torch.nn.Module:
    if model == "ffhq512":
        from bench.generator import ffhq_generator
        return ffhq_generator().eval().requires_grad_(False).to(device)
    from draggan.checkpoints import load_generator
    return load_generator(model, device=device)


def run_one(sessions: int, model: str, threads: str, steps: int, device: str) -> dict:
    """In this process: set the threads, drag `sessions` sessions at once, return the figures."""
    from draggan import settings
    from draggan.engine import DragConfig, DragSession
    from draggan.server.threads import thread_policy, usable_cores

    if threads == "policy":
        config = settings.Settings.from_env({"DRAGGAN_CONCURRENCY": str(sessions)})
        torch.set_num_threads(thread_policy(torch.device(device).type, config=config).threads)
    elif threads != "default":
        torch.set_num_threads(int(threads))
    G = _generator(model, device)
    size = G.img_resolution
    drags = []
    for k in range(sessions):
        s = DragSession(G, seed=k, psi=0.7, config=DragConfig(space="w+", max_steps=10_000))
        s.set_points([(0.3 * size, 0.3 * size)], [(0.8 * size, 0.75 * size)])
        s.step()                                     # warm-up: first-step buffers, autograd graph
        drags.append(s)
    barrier = threading.Barrier(sessions)
    per_step: list[float] = [0.0] * sessions

    def drag(k: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        for _ in range(steps):
            drags[k].step()
        per_step[k] = (time.perf_counter() - start) / steps

    workers = [threading.Thread(target=drag, args=(k,)) for k in range(sessions)]
    wall = time.perf_counter()
    [w.start() for w in workers]
    [w.join() for w in workers]
    wall = time.perf_counter() - wall
    return {"sessions": sessions, "model": model, "threads": torch.get_num_threads(), "cores": usable_cores(),
            "median_s_per_step": round(statistics.median(per_step), 3), "slowest_s_per_step": round(max(per_step), 3),
            "total_steps_per_s": round(sessions * steps / wall, 2)}


def run_visitors(visitors: int, model: str, steps: int, device: str, stagger_s: float = 0.5) -> dict:
    """In this process: the app's thread policy and job slots, `visitors` drags of `steps` steps through
    `gpu.drag` (the render policy on), started `stagger_s` apart; the figures of each visitor."""
    from draggan.engine import DragConfig, RenderPolicy
    from draggan.engine import snapshot as snapshots
    from draggan.service import gpu
    from draggan.service.models import GeneratorCache, ModelRef, set_shared_cache
    from draggan.server.threads import apply_thread_policy, thread_policy

    policy = thread_policy(torch.device(device).type)
    apply_thread_policy(policy)
    G = _generator(model, device)
    set_shared_cache(GeneratorCache(loader=lambda source, device: G)).pin(model, torch.device(device))
    ref = ModelRef(source=model, label=model)
    size = G.img_resolution
    slots = threading.Semaphore(policy.concurrency)
    config = DragConfig(space="w+", max_steps=steps)
    figures: list[dict] = [{} for _ in range(visitors)]

    def visit(k: int) -> None:
        snap, _ = inspect.unwrap(gpu.new_image)(ref, device, k, 0.7, config)
        snap = snapshots.set_points(snap, [(0.3 * size, 0.3 * size)], [(0.8 * size, 0.75 * size)])
        time.sleep(k * stagger_s)
        pressed = time.perf_counter()
        with slots:
            started = time.perf_counter()
            views, step_s = [pressed], []
            for update in inspect.unwrap(gpu.drag)(ref, device, snap, steps, None, float("inf"), 0, RenderPolicy()):
                if update.image is not None:
                    views.append(time.perf_counter())
                step_s.append(update.seconds)
        ended = time.perf_counter()
        gaps = [b - a for a, b in zip(views, views[1:] + [ended])]
        steps_s = [b - a for a, b in zip(step_s, step_s[1:])]
        figures[k] = {"visitor": k + 1, "waited_s": round(started - pressed, 2),
                      "median_step_s": round(statistics.median(steps_s), 3) if steps_s else None,
                      "views": len(views) - 1, "longest_view_gap_s": round(max(gaps), 2),
                      "drag_s": round(ended - started, 1)}

    workers = [threading.Thread(target=visit, args=(k,)) for k in range(visitors)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    return {"visitors": figures, "model": model, "size": size, "threads": torch.get_num_threads(),
            "slots": policy.concurrency, "cores": policy.cores, "steps": steps,
            "longest_view_gap_s": max(f["longest_view_gap_s"] for f in figures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--model", default="cartoon-faces-128", help="a zoo/bundled key, a file, or ffhq512")
    parser.add_argument("--threads", default="policy", help="policy, default or a number")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--visitors", type=int, default=None, help="N visitors dragging as the app runs them")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    allocate_as_the_app()
    if args.visitors is not None:
        result = run_visitors(args.visitors, args.model, args.steps, args.device)
        for figure in result["visitors"]:
            print(json.dumps({**figure, **{k: result[k] for k in ("model", "threads", "slots", "cores")}}))
        print(f"{args.visitors} visitors at {result['size']}: longest view gap {result['longest_view_gap_s']:.2f} s"
              .replace("2 visitors", "two visitors"), flush=True)
        return
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.model, args.threads, args.steps, args.device)), flush=True)
        return
    for n in args.sessions:
        out = subprocess.run([sys.executable, "-m", "bench.concurrent_sessions", "--one", str(n), "--model",
                              args.model, "--threads", args.threads, "--steps", str(args.steps), "--device",
                              args.device], capture_output=True, text=True, check=False)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()[-500:]
        print(line, flush=True)


if __name__ == "__main__":
    main()
