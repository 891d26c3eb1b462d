"""Photo inversion presets on this machine: time at 128, 512 and 1024 px, and PSNR of a preset against another.

Usage:
    python -m bench.photo_presets --times --sizes 128,512,1024            # every preset's time at each size
    python -m bench.photo_presets --psnr --sizes 128,512 --presets Fast,Fast@full,Quick --targets 2

`--times` runs each preset's stages for a few steps (`--probe-steps`) at each size and states its time as
the fixed cost (mapping samples, private copy, closing render) plus its step counts × the measured seconds
per step of each stage (the first W step is counted in the fixed cost, so W gets at least 2 probe steps), in
wall seconds and in process CPU seconds (what one idle core would take); a run of whole presets at 1024 on a CPU would take hours. `--psnr` runs the presets
in full on generated targets: at 128 the bundled cartoon model and its own images at seeds 1000+ (in
domain: the target is exactly reachable); at 512 / 1024 a random-weight generator with the FFHQ config
(`bench.generator`; random weights cost what trained ones do) and its images at seeds 1000+ rendered with
fresh noise. One torch thread, as the app's thread policy gives a job on a 2-core CPU; wall seconds and
process CPU seconds are both printed (a shared machine stretches the first). The loss is LPIPS where its
weights are cached, else the pixel + multi-scale fallback (said in the output). Not a test.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import time

import numpy as np
import torch

from bench import allocate_as_the_app
from draggan.inversion import invert
from draggan.inversion.presets import PRESETS

STAGES = ("w", "w+", "pti")


def _generator(size: int) -> torch.nn.Module:
    if size == 128:
        from draggan.checkpoints import load_generator
        return load_generator("cartoon-faces-128", device="cpu")
    from bench.generator import ffhq_generator
    torch.manual_seed(0)
    return ffhq_generator(size).eval().requires_grad_(False)


def _target(G: torch.nn.Module, seed: int) -> np.ndarray:
    """An image of `G` at `seed` (ψ 0.7) with random noise: reachable in latent, not exactly in noise."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    torch.manual_seed(seed)
    with torch.no_grad():
        img = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="random")
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def _run(G: torch.nn.Module, target: np.ndarray, name: str, **overrides) -> tuple[dict, float, float]:
    """One inversion with the preset `name` in a worker thread, as the app runs its events (a thread allocates
    as the app's do: `server/memory.py`): ({"wall"/"cpu": per-stage seconds per step, the median after each
    stage's first step}, wall s, CPU s)."""
    config = PRESETS[name].config(preview_every=10 ** 6, **overrides)
    marks: list[tuple[str, float, float]] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        result = worker.submit(invert, G, target, config, progress=lambda e: marks.append(
            (e.stage, time.perf_counter(), time.process_time()))).result()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out: dict = {"result": result}
    for clock, index in (("wall", 1), ("cpu", 2)):
        steps: dict[str, list[float]] = {}
        for now, before in zip(marks[1:], marks[:-1]):
            steps.setdefault(now[0], []).append(now[index] - before[index])
        out[clock] = {stage: statistics.median(ts[1:] or ts) for stage, ts in steps.items()}
    return out, wall, cpu


def times(sizes: list[int], probe: int, names: list[str]) -> list[dict]:
    rows = []
    for size in sizes:
        G = _generator(size)
        target = _target(G, 999)
        for name in names:
            preset = PRESETS[name]
            probe_steps = dict(w_steps=max(2, probe), wplus_steps=min(probe, preset.wplus_steps) if preset.wplus_steps else 0,
                               pti_steps=probe if preset.pti_steps else 0)
            out, wall, cpu = _run(G, target, name, **probe_steps)
            row = dict(size=size, preset=name, steps=preset.steps, project_size=preset.project_size)
            for clock, total in (("wall", wall), ("cpu", cpu)):
                per = out[clock]
                probed = sum(per.get(stage, 0.0) * n for stage, n in zip(STAGES, probe_steps.values()))
                fixed = max(0.0, total - probed)
                row[f"{clock}_s_per_step"] = {k: round(v, 3) for k, v in per.items()}
                row[f"{clock}_fixed_s"] = round(fixed, 1)
                row[f"{clock}_estimated_s"] = round(fixed + sum(per.get(stage, 0.0) * n for stage, n
                                                               in zip(STAGES, preset.steps)), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def psnrs(sizes: list[int], presets: list[str], targets: int) -> list[dict]:
    """Each of `presets` in full on each size's targets; `NAME@full` is the preset projecting at full size."""
    rows = []
    for size in sizes:
        G = _generator(size)
        for name in presets:
            preset, _, at = name.partition("@")
            overrides = dict(project_size=0) if at == "full" else {}
            for seed in range(1000, 1000 + targets):
                out, wall, cpu = _run(G, _target(G, seed), preset, **overrides)
                result = out["result"]
                row = dict(size=size, preset=name, seed=seed, psnr=round(result.psnr, 2),
                           lpips=None if result.lpips is None else round(result.lpips, 4), loss=result.loss_name,
                           wall_s=round(wall, 1), cpu_s=round(cpu, 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
    for size in sizes:
        for name in presets:
            mine = [r for r in rows if r["size"] == size and r["preset"] == name]
            print(f"{size} px {name}: PSNR {statistics.mean(r['psnr'] for r in mine):.2f} dB, "
                  f"{statistics.mean(r['wall_s'] for r in mine):.0f} s wall, "
                  f"{statistics.mean(r['cpu_s'] for r in mine):.0f} CPU-s (mean of {len(mine)})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", action="store_true")
    parser.add_argument("--psnr", action="store_true")
    parser.add_argument("--sizes", default="128,512,1024")
    parser.add_argument("--presets", default="", help="names, comma-separated (default: --times all, --psnr "
                                                                "Fast,Quick); NAME@full projects at full size")
    parser.add_argument("--targets", type=int, default=1)
    parser.add_argument("--probe-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    allocate_as_the_app()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    if args.times:
        rows += times(sizes, args.probe_steps, args.presets.split(",") if args.presets else list(PRESETS))
    if args.psnr:
        rows += psnrs(sizes, (args.presets or "Fast,Quick").split(","), args.targets)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
