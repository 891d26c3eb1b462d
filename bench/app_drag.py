"""A drag timed as the app runs it (steps + previews/renders under the render policy) beside the bare steps.

Usage: python -m bench.app_drag [--steps 100] [--warmup 1] [--repeats 3] [--threads 1] [--sizes 512,1024]
                                [--cases unmasked,quarter,painted] [--mask-steps 5] [--device cpu]

For each size (random-weight StyleGAN2: the FFHQ-512 config of `bench.generator.ffhq_generator`, and
the same config at 1024 as NVIDIA's stylegan2-ffhq-1024x1024.pkl), seed-0 latent at ψ = 0.7, W+, one
handle (points scaled from 512):
- unmasked, handle dragged across the diagonal (452 px, not reached in 100 steps, so no step is a cheap
  arrived one): `--steps` bare `DragSession.step()` calls, then a fresh session that renders its start
  image (as the app shows it before any drag) and `run(max_steps=steps, policy=RenderPolicy())` as the app
  calls it (the first drag of the process: the preview's cost is not known yet): wall time, images and their kinds,
  the longest time the view went without a new image (from the run's start to its last image), one full
  render and one preview; ratio app/bare of the wall times. Bare steps and app drag are timed in turns
  `--repeats` times and the median ratio is reported (a shared machine's speed drifts between the two).
- quarter, handle 130 px from its target: a fixed region covering a quarter of the image (its top-left
  quadrant, the handle at its corner); `--mask-steps` steps, beside as many unmasked steps.
- painted: a painted flexible area (a disk around handle and target, 3/8 of the height across), fixed =
  the rest; `--mask-steps` steps, beside as many whole-map steps (`DragConfig(windowed=False)`, no mask).
The masked cases' sessions (unmasked, quarter, painted, whole-map) step in turns, one step each per round,
so a change in the machine's speed (other processes) hits all alike. They print the median seconds per step
and the ratio of process-CPU seconds to the unmasked step's (with one thread CPU seconds are the work done,
robust to other processes on a shared machine), and painted/whole-map. The app's own
image encoding and transfer are not included. The last line printed is `app/bare ratio R` for the
512 unmasked case (when it ran). With `--device cuda` the same runs happen on the GPU (the session
renders with `synthesis(ws)` there, no preview); then read the wall times: the CPU columns are the host's.
Not a test: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench import allocate_as_the_app
from bench.generator import ffhq_generator
from draggan.engine import DragConfig, DragSession, RenderPolicy
from draggan.networks.stylegan2 import Generator


def generator(size: int) -> Generator:
    """Random-weight FFHQ config at 512 or 1024 (`bench.generator.ffhq_generator`), in eval mode without
    gradients as the app loads every model (in training mode the full render is unfused, ~40 % slower, and
    would not be the app's)."""
    return ffhq_generator(size).eval().requires_grad_(False)


def _points(size: int, far: bool = False) -> tuple[tuple[int, int], tuple[int, int]]:
    """(x, y) handle and target: 130 px apart at 512 (scaled), or across the diagonal when `far` (452 px at
    512: on these random weights a handle moves ~2 px per step, so 100 steps never arrive)."""
    s = size / 512
    if far:
        return (round(100 * s), round(100 * s)), (round(420 * s), round(420 * s))
    return (round(256 * s), round(200 * s)), (round(256 * s), round(330 * s))


def _session(G: Generator, ws0: torch.Tensor, size: int, mask: np.ndarray | None = None,
             windowed: bool = True, far: bool = False) -> DragSession:
    session = DragSession(G, w=ws0, config=DragConfig(space="w+", windowed=windowed, max_steps=100000))
    handle, target = _points(size, far)
    session.set_points([handle], [target])
    session.set_mask(mask)
    return session


def step_times(sessions: dict[str, DragSession], steps: int, warmup: int
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds of `steps` steps of every session, taken in turns (one step each per
    round, after `warmup` rounds) so that a drift in the machine's speed hits every case alike."""
    wall = {name: [] for name in sessions}
    cpu = {name: [] for name in sessions}
    for i in range(warmup + steps):
        for name, session in sessions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            session.step()
            if i >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return wall, cpu


def masks(size: int) -> dict[str, np.ndarray]:
    """quarter: fixed top-left quadrant; painted: fixed everywhere but a disk around handle and target;
    flexible: fixed everywhere but a 3 % band around the handle → target segment (the issue-23 drag)."""
    quarter = np.zeros([size, size], np.float32)
    quarter[:size // 2, :size // 2] = 1
    (hx, hy), (tx, ty) = _points(size)
    yy, xx = np.mgrid[:size, :size]
    centre = ((hx + tx) / 2, (hy + ty) / 2)
    painted = (np.hypot(xx - centre[0], yy - centre[1]) > size * 3 / 16).astype(np.float32)
    length = np.hypot(tx - hx, ty - hy)
    radius = (-2 * length + np.sqrt(4 * length ** 2 + 4 * np.pi * 0.03 * size * size)) / (2 * np.pi)  # area 3 %
    t = np.clip(((xx - hx) * (tx - hx) + (yy - hy) * (ty - hy)) / length ** 2, 0, 1)
    flexible = (np.hypot(xx - hx - t * (tx - hx), yy - hy - t * (ty - hy)) > radius).astype(np.float32)
    return dict(quarter=quarter, painted=painted, flexible=flexible)


def run_size(size: int, args: argparse.Namespace, G: torch.nn.Module | None = None) -> float | None:
    """Print this size's numbers; return its app/bare ratio (None when the unmasked case did not run). `G`: the
    generator (square, `size` pixels; default `generator(size)`)."""
    device = torch.device(args.device)
    G = (generator(size) if G is None else G).to(device)
    with torch.no_grad():
        z = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).to(device)
        ws0 = G.mapping(z, None, truncation_psi=0.7)
    print(f"--- {size}x{size}: threads={torch.get_num_threads()} device={device}")
    ratio = None
    if "unmasked" in args.cases:
        ratios = []
        for repeat in range(args.repeats):
            wall, cpu = step_times({"bare": _session(G, ws0, size, far=True)}, args.steps, args.warmup)
            bare, bare_cpu = wall["bare"], cpu["bare"]
            session = _session(G, ws0, size, far=True)
            step_times({"app": session}, 0, args.warmup)
            session.render()     # the app shows the start image before a drag (so that render's cost is known)
            t0, c0 = time.perf_counter(), time.process_time()
            image_times, kinds = [], []
            for result in session.run(max_steps=args.steps, policy=RenderPolicy()):
                last = result
                if result.image is not None:
                    image_times.append(time.perf_counter())
                    kinds.append(result.image_kind)
            app, app_cpu = time.perf_counter() - t0, time.process_time() - c0
            gaps = np.diff([t0] + image_times)
            c1 = time.process_time()
            session.render()
            full_cpu = time.process_time() - c1
            c1 = time.process_time()
            session.render(preview=True)
            preview_cpu = time.process_time() - c1
            ratios.append(app / sum(bare))
            print(f"[{repeat + 1}/{args.repeats}] bare step: median {statistics.median(bare):.3f} s "
                  f"(CPU {statistics.median(bare_cpu):.3f} s), {args.steps} steps {sum(bare):.1f} s "
                  f"(CPU {sum(bare_cpu):.1f} s)")
            print(f"  app drag ({last.step} steps{', arrived' if last.done else ''}, RenderPolicy()): "
                  f"{app:.1f} s (CPU {app_cpu:.1f} s), "
                  f"{kinds.count('preview')} previews + {kinds.count('full')} full renders, "
                  f"longest view gap {gaps.max():.2f} s; one full render CPU {full_cpu:.2f} s, "
                  f"one preview CPU {preview_cpu:.2f} s; app/bare {ratios[-1]:.2f} "
                  f"(CPU {app_cpu / sum(bare_cpu):.2f})")
        ratio = statistics.median(ratios)
        print(f"{size} app/bare {ratio:.2f} (median of {args.repeats}: {', '.join(f'{r:.2f}' for r in ratios)})")
    if {"quarter", "painted"} & set(args.cases):
        sessions = {"unmasked": _session(G, ws0, size)}
        for name, mask in masks(size).items():
            if name in args.cases:
                sessions[name] = _session(G, ws0, size, mask)
        if "painted" in args.cases:
            sessions["whole"] = _session(G, ws0, size, windowed=False)
        wall, cpu = step_times(sessions, args.mask_steps, args.warmup)
        unmasked = statistics.median(cpu["unmasked"])
        for name, mask in masks(size).items():
            if name in sessions:
                t = statistics.median(cpu[name])
                print(f"masked step ({name}, fixed {mask.mean():.0%} of the image): median "
                      f"{statistics.median(wall[name]):.3f} s, CPU {t:.3f} s = {t / unmasked:.2f}x unmasked "
                      f"(CPU {unmasked:.3f} s)")
        if "whole" in sessions:
            whole = statistics.median(cpu["whole"])
            painted = statistics.median(cpu["painted"])
            print(f"whole-map step (no mask, windowed=False): median {statistics.median(wall['whole']):.3f} s, "
                  f"CPU {whole:.3f} s = {whole / unmasked:.2f}x unmasked; painted/whole-map {painted / whole:.2f}")
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--mask-steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="unmasked: bare steps and app drag, in turns")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--cases", default="unmasked,quarter,painted")
    parser.add_argument("--device", default="cpu", help="where the generator and the drag run (cpu, cuda)")
    args = parser.parse_args(argv)
    allocate_as_the_app()
    args.cases = args.cases.split(",")
    torch.set_num_threads(args.threads)
    ratios = {size: run_size(size, args) for size in (int(s) for s in args.sizes.split(","))}
    if ratios.get(512) is not None:
        print(f"app/bare ratio {ratios[512]:.2f}")


if __name__ == "__main__":
    main()
