"""Seconds per drag step (one handle) and peak memory: our engine vs. the official DragGAN step.

Usage: python -m bench.drag_step [--steps 5] [--warmup 1] [--device cpu|cuda] [--threads N]
                                 [--variant both|ours|official] [--size 128|512|1024] [--masked]

Both variants run on the same random-weight FFHQ-512-config StyleGAN2 (`bench.generator.ffhq_generator`;
`--size 1024`: the FFHQ-1024 config; `--size 128`: the bundled cartoon-faces-128, the app's default model),
seed-0 latent at ψ = 0.7, W+ space, one handle with a far target (so no step stops early; points scaled
from 512).
- ours: `draggan.engine.DragSession.step()`.
- official: an in-file re-implementation of `viz/renderer.py::_render_drag_impl` as the official app runs
  it: full synthesis with fused modulated convolutions (its networks' `fused_modconv_default`) and
  generator parameters that require grad (the renderer never freezes them), the feature block upsampled
  to image size, per-point Python loops for tracking and motion supervision, the image converted to uint8
  every step.
`--masked` times our masked step instead, beside the unmasked steps it is held to: the windowed step (the
default) and the whole-map step (`DragConfig(windowed=False)`), and the masks of `bench.app_drag.masks`
(fixed: a quarter, all but a disk, all but a 3 % band around the drag), the sessions stepping in turns
(`bench.app_drag.step_times`); it prints ms/step (wall and process CPU) and each masked step ÷ the
whole-map step, whose goal is ≤ MASKED_GOAL (a masked step must compute its fixed area, up to the whole map,
but not more).
With --variant both each variant runs in its own subprocess so that peak memory is measured separately.
Process CPU seconds per step are printed next to wall-clock seconds: on a shared machine they show the
work done while the wall clock is inflated by other processes (with several threads they include spinning
in the thread pool). Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the growth of the
process's peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) over the steps, relative
to the peak after the generator was built and the latent set up (tracemalloc does not see torch
allocations). Not a test: numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench import allocate_as_the_app
from bench.app_drag import masks, step_times
from bench.generator import ffhq_generator
from draggan.checkpoints import load_generator
from draggan.engine import DragConfig, DragSession

MASKED_GOAL = 1.2  # a masked step ÷ the whole-map unmasked step, at most


def bench_generator(size: int) -> torch.nn.Module:
    """The bundled cartoon-faces-128 at 128 (offline), else the random-weight FFHQ config at `size`."""
    return load_generator("cartoon-faces-128", device="cpu") if size == 128 else ffhq_generator(size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class OfficialDrag:
    """The official DragGAN drag step (W+, feature block 5, r1 = 3, r2 = 12, lr 1e-3, no mask)."""

    def __init__(self, G: torch.nn.Module, ws0: torch.Tensor, feature_idx: int = 5, lr: float = 1e-3,
                 r1: float = 3, r2: float = 12) -> None:
        self.G = G
        self.w0 = ws0.detach().clone()
        self.w = ws0.detach().clone().requires_grad_(True)
        self.optim = torch.optim.Adam([self.w], lr=lr)
        self.feature_idx = feature_idx
        self.r1 = r1
        self.r2 = r2
        self.feat_refs = None
        self.feat0_resize = None

    def step(self, points: list[list[int]], targets: list[list[int]]) -> np.ndarray:
        """One step on (row, col) points, updated in place; returns the uint8 image."""
        G = self.G
        ws = torch.cat([self.w[:, :6], self.w0[:, 6:]], dim=1)
        img, feat = G.synthesis(ws, noise_mode="const", return_features=True, fused_modconv=True)
        h, w = G.img_resolution, G.img_resolution
        X = torch.linspace(0, h, h)
        Y = torch.linspace(0, w, w)
        xx, yy = torch.meshgrid(X, Y, indexing="ij")
        feat_resize = F.interpolate(feat[self.feature_idx], [h, w], mode="bilinear")
        if self.feat_refs is None:
            self.feat0_resize = F.interpolate(feat[self.feature_idx].detach(), [h, w], mode="bilinear")
            self.feat_refs = [self.feat0_resize[:, :, round(p[0]), round(p[1])] for p in points]
        with torch.no_grad():
            for j, point in enumerate(points):
                r = round(self.r2 / 512 * h)
                up, down = max(point[0] - r, 0), min(point[0] + r + 1, h)
                left, right = max(point[1] - r, 0), min(point[1] + r + 1, w)
                patch = feat_resize[:, :, up:down, left:right]
                dist = torch.linalg.norm(patch - self.feat_refs[j].reshape(1, -1, 1, 1), dim=1)
                _, idx = torch.min(dist.view(1, -1), -1)
                width = right - left
                points[j] = [idx.item() // width + up, idx.item() % width + left]
        loss = 0
        stop = True
        for j, point in enumerate(points):
            direction = torch.Tensor([targets[j][1] - point[1], targets[j][0] - point[0]])
            if torch.linalg.norm(direction) > max(2 / 512 * h, 2):
                stop = False
            if torch.linalg.norm(direction) > 1:
                distance = ((xx.to(self.w.device) - point[0]) ** 2 + (yy.to(self.w.device) - point[1]) ** 2) ** 0.5
                relis, reljs = torch.where(distance < round(self.r1 / 512 * h))
                direction = direction / (torch.linalg.norm(direction) + 1e-7)
                gridh = (relis + direction[1].to(relis.device)) / (h - 1) * 2 - 1
                gridw = (reljs + direction[0].to(reljs.device)) / (w - 1) * 2 - 1
                grid = torch.stack([gridw, gridh], dim=-1).unsqueeze(0).unsqueeze(0)
                target = F.grid_sample(feat_resize.float(), grid, align_corners=True).squeeze(2)
                loss = loss + F.l1_loss(feat_resize[:, :, relis, reljs].detach(), target)
        if not stop:
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()
        return (img[0] * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(variant: str, steps: int, warmup: int, device: torch.device, size: int = 512,
                G: torch.nn.Module | None = None) -> dict:
    """Time `steps` steps (after `warmup`) of one variant; returns its numbers. `G`: the generator (square,
    `size` pixels; default `bench_generator(size)`), moved to `device`."""
    G = (bench_generator(size) if G is None else G).eval().to(device)
    with torch.no_grad():
        ws0 = G.latent_from_seed(0, psi=0.7)
    s = size / 512
    handle, target = (round(256 * s), round(200 * s)), (round(256 * s), round(330 * s))  # (x, y): 130 px at 512
    if variant == "ours":
        session = DragSession(G.requires_grad_(False), w=ws0, config=DragConfig(space="w+"))
        session.set_points([handle], [target])
        step = session.step
    else:
        last_block = len(G.synthesis.block_resolutions) - 1      # block 5 as the official app, if there is one
        official = OfficialDrag(copy.deepcopy(G).requires_grad_(True), ws0, feature_idx=min(5, last_block))
        points, targets = [[handle[1], handle[0]]], [[target[1], target[0]]]

        def step() -> None:
            official.step(points, targets)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_bytes(device)
    times, cpu_times = [], []
    for i in range(warmup + steps):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = _peak_bytes(device)
    return dict(variant=variant, device=str(device), size=size, threads=torch.get_num_threads(), steps=steps,
                seconds=times, median_s=statistics.median(times), median_cpu_s=statistics.median(cpu_times),
                peak_bytes=peak, peak_growth_bytes=peak - base)


def run_masked(steps: int, warmup: int, device: torch.device, size: int) -> None:
    """Print ms/step of the masked steps beside the unmasked windowed and whole-map steps (module docstring)."""
    G = bench_generator(size).eval().requires_grad_(False).to(device)
    with torch.no_grad():
        ws0 = G.latent_from_seed(0, psi=0.7)
    s = size / 512
    handle, target = (round(256 * s), round(200 * s)), (round(256 * s), round(330 * s))
    fixed = masks(size)

    def session(mask: np.ndarray | None, windowed: bool = True) -> DragSession:
        out = DragSession(G, w=ws0, config=DragConfig(space="w+", windowed=windowed, max_steps=100000))
        out.set_points([handle], [target])
        out.set_mask(mask)
        return out

    sessions = {"unmasked windowed": session(None), "unmasked whole-map": session(None, windowed=False)}
    sessions.update({f"masked {name}": session(mask) for name, mask in fixed.items()})
    wall, cpu = step_times(sessions, steps, warmup)
    whole = statistics.median(cpu["unmasked whole-map"])
    print(f"{size}px device={device} threads={torch.get_num_threads()} steps={steps} (in turns)")
    worst = 0.0
    for name in sessions:
        share = f", fixed {fixed[name.split()[1]].mean():.0%}" if name.startswith("masked") else ""
        ratio = statistics.median(cpu[name]) / whole
        if name.startswith("masked"):
            worst = max(worst, ratio)
        print(f"{name + share:>32}: median {1000 * statistics.median(wall[name]):7.1f} ms/step, "
              f"CPU {1000 * statistics.median(cpu[name]):7.1f} ms = {ratio:.2f}x whole-map")
    print(f"worst masked / whole-map {worst:.2f} (goal ≤ {MASKED_GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=("both", "ours", "official"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for subprocesses)")
    parser.add_argument("--size", type=int, choices=(128, 512, 1024), default=512,
                        help="image resolution (128: the bundled model)")
    parser.add_argument("--masked", action="store_true", help="masked vs unmasked windowed and whole-map steps")
    args = parser.parse_args()
    allocate_as_the_app()
    if args.masked:
        torch.set_num_threads(args.threads or 1)
        run_masked(args.steps, args.warmup, torch.device(args.device), args.size)
        return
    if args.variant == "both":
        results = []
        for variant in ("official", "ours"):
            cmd = [sys.executable, "-m", "bench.drag_step", "--variant", variant, "--json",
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
                   "--size", str(args.size)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        result = run_variant(args.variant, args.steps, args.warmup, torch.device(args.device), args.size)
        if args.json:
            print(json.dumps(result))
            return
        results = [result]
    memory = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "ru_maxrss growth"
    for r in results:
        print(f"{r['variant']:>8}: {r['size']}px device={r['device']} threads={r['threads']} steps={r['steps']} "
              f"median {r['median_s']:.3f} s/step (all: {' '.join(f'{t:.2f}' for t in r['seconds'])}; "
              f"median process CPU {r['median_cpu_s']:.3f} s/step); "
              f"peak {r['peak_bytes'] / 2**20:.0f} MiB, {memory} {r['peak_growth_bytes'] / 2**20:.0f} MiB")
    if len(results) == 2:
        print(f"speed-up official/ours: {results[0]['median_s'] / results[1]['median_s']:.2f}x")


if __name__ == "__main__":
    main()
