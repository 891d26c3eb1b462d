"""Seconds per drag step (one handle) and peak memory: our engine vs. the official DragGAN step.

Usage: python -m bench.drag_step [--steps 5] [--warmup 1] [--device cpu|cuda] [--threads N]
                                 [--variant both|ours|official] [--size 512|1024]

Both variants run on the same random-weight FFHQ-512-config StyleGAN2 (`bench.generator.ffhq_generator`;
`--size 1024`: the FFHQ-1024 config), seed-0 latent at ψ = 0.7, W+ space, one handle with a far target (so
no step stops early; points scaled from 512).
- ours: `draggan.engine.DragSession.step()`.
- official: an in-file re-implementation of `viz/renderer.py::_render_drag_impl` as the official app runs
  it: full synthesis with fused modulated convolutions (its networks' `fused_modconv_default`) and
  generator parameters that require grad (the renderer never freezes them), the feature block upsampled
  to image size, per-point Python loops for tracking and motion supervision, the image converted to uint8
  every step.
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

from bench.generator import ffhq_generator
from draggan.engine import DragConfig, DragSession


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
    `size` pixels; default the FFHQ config of that size with random weights), moved to `device`."""
    G = (ffhq_generator(size) if G is None else G).eval().to(device)
    with torch.no_grad():
        ws0 = G.latent_from_seed(0, psi=0.7)
    s = size / 512
    handle = (round(256 * s), round(200 * s))  # (x, y): 130 px away at 512, never reached soon
    target = (round(256 * s), round(330 * s))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", choices=("both", "ours", "official"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON line (used for subprocesses)")
    parser.add_argument("--size", type=int, choices=(512, 1024), default=512, help="image resolution")
    args = parser.parse_args()
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
