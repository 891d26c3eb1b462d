"""The GPU path in one run: equality with the CPU, a ZeroGPU-style forked call, speed, and the goals.

Usage: python -m bench.gpu_check [--device cuda] [--out DIR] [--steps 50] [--sections equality,forked,...]
       python -m bench.gpu_check --device cpu --quick      (tiny sizes; the test suite runs this)

Models: the FFHQ-512 and FFHQ-1024 StyleGAN2 configurations with random weights (`bench.generator`; random
weights cost the same as NVIDIA's) and the bundled model (`cartoon-faces-128`). `--quick`: one 64-px network
with fp16 layers and `cartoon-faces-64`, a few steps each. Sections (all by default):
- equality: the same drag (`--steps` steps, one handle 130 px from its target at 512, scaled; unmasked and
  with the top-left quarter fixed, so the masked L1's device branch runs) on `--device` and on the CPU in
  float32 with its direct render (the CPU app's path): tracked handles within 1 px and final image PSNR
  ≥ 35 dB, with the fp16 layers on (NVIDIA's rule: float16 on CUDA) and off (float32). On the CPU the
  "device" side runs the GPU's branches instead: the fp16 layers forced on in a stand-in half dtype
  (`networks/precision.py`) and the session's `synthesis(ws)` render (`direct_render=False`). Also the
  masked L1 (`engine/phase_l1.py`) in its device plan against its CPU plan and the official formula.
- forked: a drag through `draggan.service.gpu`'s functions run as ZeroGPU runs them (`server/forked.py`: a forked,
  pickling worker, started before this process touches the device) against the same calls in-process.
- speed: ms per bare drag step, ours and the official formulation (`bench.drag_step.run_variant`), peak
  device memory of ours; the app-level drag against the bare steps (`bench.app_drag.run_size`, app/bare).
- photo: seconds per step of each inversion stage (`draggan.inversion.invert`, a few steps each, on an
  image of the model itself), and from them each photo preset's time (`draggan.inversion.presets.PRESETS`).
- load: model load (`load_generator` from a model folder / the bundled key) to the first image.
Writes `gpu_check.json` and `gpu_check.md` to `--out` (rewritten after every section, so a run cut short
keeps what it measured). A section that raises, or that would start after `--budget` seconds (480), is a
failed check. Exits 1, printing MISMATCH, when any check fails; the speed goals (≤ 10 ms per step at
512, ≥ 3× the official step, app/bare ≤ 1.3, the Best preset at 512 ≤ 60 s) are reported met or missed (on a
CPU: not applicable) and do not change the exit status.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

HANDLE_PX = 1.0        # tracked handles: max distance between the two runs
MIN_PSNR = 35.0        # final images: PSNR in dB
GOALS = dict(ms_per_step_512=10.0, official_ratio_512=3.0, app_over_bare_512=1.3, best_preset_512_s=60.0)
GOAL_MODEL = {False: "ffhq-512", True: "tiny-64"}   # the model the goals are read on (quick: only the code runs)


@dataclasses.dataclass
class Row:
    """One line of the report: a check (`ok` True/False), a goal (met/missed/n/a) or a figure (ok None)."""

    section: str
    model: str
    name: str
    value: float | None
    unit: str = ""
    limit: str = ""
    ok: bool | None = None
    kind: str = "figure"      # "check" (fails the run), "goal" (reported) or "figure"

    @property
    def status(self) -> str:
        if self.kind == "check":
            return "ok" if self.ok else "MISMATCH"
        if self.kind == "goal":
            return "n/a" if self.ok is None else ("met" if self.ok else "missed")
        return ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quick_generator(resolution: int = 64) -> torch.nn.Module:
    """A small random StyleGAN2 whose top four resolutions are fp16 layers, as in NVIDIA's FFHQ configs."""
    from draggan.networks.stylegan2 import Generator

    torch.manual_seed(0)
    return Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=resolution * 32, channel_max=32, num_fp16_res=4,
                                           conv_clamp=256)).eval().requires_grad_(False)


def models(quick: bool) -> dict[str, Callable[[], torch.nn.Module]]:
    """Name → a CPU generator factory (eval mode, no gradients)."""
    from bench.app_drag import generator
    from draggan.checkpoints import load_generator

    if quick:
        return {"tiny-64": quick_generator, "cartoon-faces-64": lambda: load_generator("cartoon-faces-64", "cpu")}
    return {"ffhq-512": lambda: generator(512), "ffhq-1024": lambda: generator(1024),
            "cartoon-faces-128": lambda: load_generator("cartoon-faces-128", "cpu")}


def stand_in_half(device: torch.device) -> torch.dtype:
    """The half dtype of the fp16 layers: float16 on CUDA; on a CPU bfloat16 where oneDNN runs it natively,
    else float16 (both run there; the other is slow reference kernels)."""
    from draggan.networks.stylegan2_render import preview_dtype

    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if preview_dtype() == torch.bfloat16 else torch.float16


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def handle_gap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Largest distance in pixels between corresponding handles of two runs."""
    return max(math.hypot(x0 - x1, y0 - y1) for (x0, y0), (x1, y1) in zip(a, b))


def drag(G: torch.nn.Module, steps: int, mask: np.ndarray | None = None, direct_render: bool | None = None,
         lr: float = 2e-3) -> tuple[list[tuple[float, float]], np.ndarray]:
    """`steps` drag steps of seed 0 (ψ 0.7, W+) with one handle 130 px from its target at 512 (scaled),
    then the session's exact image: (handles, uint8 image). `direct_render=False` renders with `synthesis(ws)`
    (the GPU's path) where the CPU would use its direct form."""
    from bench.app_drag import _points
    from draggan.engine import DragConfig, DragSession

    session = DragSession(G, seed=0, psi=0.7, config=DragConfig(space="w+", lr=lr, max_steps=steps))
    if direct_render is not None:
        session.direct_render = direct_render
    handle, target = _points(G.img_resolution)
    session.set_points([handle], [target])
    session.set_mask(mask)
    for _ in range(steps):
        if session.step().done:
            break
    return session.handles, session.render()


def _compare(rows: list[Row], model: str, case: str, ref: tuple, got: tuple) -> None:
    gap, quality = handle_gap(ref[0], got[0]), psnr_u8(ref[1], got[1])
    rows.append(Row("equality", model, f"{case}: handle gap", gap, "px", f"<= {HANDLE_PX}", gap <= HANDLE_PX, "check"))
    rows.append(Row("equality", model, f"{case}: image PSNR", quality, "dB", f">= {MIN_PSNR}", quality >= MIN_PSNR,
                    "check"))


def equality(rows: list[Row], name: str, G_cpu: torch.nn.Module, device: torch.device, steps: int) -> None:
    """The drags of the module docstring, on `device` (CPU: its GPU branches) against the CPU's float32 drag."""
    from bench.app_drag import masks
    from draggan.networks.precision import set_half_dtype

    size = G_cpu.img_resolution
    quarter = masks(size)["quarter"]
    reference = copy.deepcopy(G_cpu)
    set_half_dtype(reference, torch.float32)
    on_cpu = device.type == "cpu"
    cases = [("fp16 on", None, quarter), ("fp16 on", None, None), ("fp16 off", torch.float32, None)]
    expected = {}
    for label, half, mask in cases:
        key = mask is not None
        if key not in expected:
            expected[key] = drag(reference, steps, mask)
        G = copy.deepcopy(G_cpu).to(device)
        set_half_dtype(G, stand_in_half(device) if on_cpu and half is None else half)
        got = drag(G, steps, mask, direct_render=False if on_cpu else None)
        case = f"{steps}-step drag{', quarter fixed' if key else ''}, {label}"
        _compare(rows, name, f"{case} ({device.type} vs cpu float32)", expected[key], got)
        del G


def phase_l1_plans(rows: list[Row], device: torch.device, quick: bool) -> None:
    """The masked L1 on `device` in its own plan, and in the other device's, against the official formula."""
    from draggan.engine.phase_l1 import phase_l1

    feat_hw, scale, channels = ((16, 16), 4, 4) if quick else ((128, 128), 4, 64)
    image_hw = (feat_hw[0] * scale, feat_hw[1] * scale)
    gen = torch.Generator().manual_seed(0)
    feat0 = torch.randn(channels, *feat_hw, generator=gen)
    coarse = F.interpolate(torch.randn(channels, 1, 3, 3, generator=gen), list(feat_hw), mode="bilinear")[:, 0]
    feat = feat0 + coarse + 0.05 * torch.randn(channels, *feat_hw, generator=gen)
    yy, xx = np.mgrid[:image_hw[0], :image_hw[1]]
    mask = torch.tensor(np.hypot(yy - image_hw[0] / 2, xx - image_hw[1] / 2) > image_hw[0] / 4, dtype=torch.float32)
    feat, feat0, mask = feat.to(device).requires_grad_(True), feat0.to(device), mask.to(device)
    up = F.interpolate(feat[None], list(image_hw), mode="bilinear")
    up0 = F.interpolate(feat0[None], list(image_hw), mode="bilinear")
    official = ((up - up0).abs() * mask).sum()
    (g_official,) = torch.autograd.grad(official, [feat])
    other = "cuda" if device.type == "cpu" else "cpu"
    for plan in (None, other):
        value, grad = phase_l1(feat.detach(), feat0, mask, (0, feat_hw[0]), (0, feat_hw[1]), (scale, scale), (0, 0),
                               want_grad=True, plan=plan)
        err = abs(value.item() - official.item()) / max(abs(official.item()), 1e-12)
        g_err = ((grad - g_official).abs().max() / g_official.abs().max().clamp_min(1e-12)).item()
        label = f"masked L1, {plan or device.type} plan on {device.type}"
        rows.append(Row("equality", "phase_l1", f"{label}: value rel. error", err, "", "<= 1e-4", err <= 1e-4, "check"))
        rows.append(Row("equality", "phase_l1", f"{label}: gradient rel. error", g_err, "", "<= 1e-4", g_err <= 1e-4,
                        "check"))


def forked_worker(device: str, source: str, steps: int) -> dict[str, Any]:
    """The forked drag, then the same in-process (this process must not have touched `device` before)."""
    from draggan.engine import snapshot as snapshots
    from draggan.service import gpu
    from draggan.server.forked import forked
    from bench.app_drag import _points
    from draggan.engine import DragConfig
    from draggan.service.models import ModelRef

    ref = ModelRef(source, source)
    config = DragConfig(lr=4e-3, max_steps=steps)
    handle, target = _points(gpu.generator(ref, "cpu").img_resolution)   # loaded on the CPU, as a server does
    outcome = {}
    for where, wrap in (("forked", forked), ("in-process", lambda fn: fn)):
        snap, _ = wrap(inspect.unwrap(gpu.new_image))(ref, device, 0, 0.7, config)
        snap = snapshots.set_points(snap, [handle], [target])
        last = list(wrap(inspect.unwrap(gpu.drag))(ref, device, snap, steps, None, float("inf"), 0))[-1]
        outcome[where] = dict(handles=[list(h) for h in last.handles], image=last.image.tolist(), end=last.end)
    return outcome


def forked_check(rows: list[Row], device: torch.device, source: str, steps: int) -> None:
    """Run `forked_worker` in a fresh process (CUDA cannot be used in a child forked after it started)."""
    cmd = [sys.executable, "-m", "bench.gpu_check", "--forked-worker", source, "--device", str(device),
           "--steps", str(steps)]
    env = dict(os.environ, PYTORCH_NVML_BASED_CUDA_CHECK="1")   # torch.cuda.is_available() must not poison fork
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        rows.append(Row("forked", source, "forked worker ran", None, "", "exit 0", False, "check"))
        return
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    local, remote = outcome["in-process"], outcome["forked"]
    ref = ([tuple(h) for h in local["handles"]], np.array(local["image"], np.uint8))
    got = ([tuple(h) for h in remote["handles"]], np.array(remote["image"], np.uint8))
    gap, quality = handle_gap(ref[0], got[0]), psnr_u8(ref[1], got[1])
    case = f"{steps}-step drag forked vs in-process on {device.type}"
    rows.append(Row("forked", source, f"{case}: handle gap", gap, "px", f"<= {HANDLE_PX}", gap <= HANDLE_PX, "check"))
    rows.append(Row("forked", source, f"{case}: image PSNR", quality, "dB", f">= {MIN_PSNR}", quality >= MIN_PSNR,
                    "check"))


def speed(rows: list[Row], name: str, G_cpu: torch.nn.Module, device: torch.device, quick: bool,
          goals: bool = False) -> None:
    """Bare steps, ours and official (`bench.drag_step`), and app/bare (`bench.app_drag`), on `device`; with
    `goals` (the FFHQ-512 model) the goals too."""
    from bench.app_drag import run_size
    from bench.drag_step import run_variant

    size = G_cpu.img_resolution
    steps, warmup = (2, 1) if quick else (20, 3)
    results = {}
    for variant in ("ours", "official"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results[variant] = run_variant(variant, steps, warmup, device, size, G=copy.deepcopy(G_cpu))
    ours, official = results["ours"]["median_s"] * 1e3, results["official"]["median_s"] * 1e3
    ratio = official / ours
    gpu = device.type == "cuda"
    rows.append(Row("speed", name, "ms per bare step, ours", ours, "ms"))
    rows.append(Row("speed", name, "ms per bare step, official", official, "ms"))
    rows.append(Row("speed", name, "official / ours", ratio, "x"))
    peak = "peak GPU memory, ours" if gpu else "peak RSS growth, ours"
    rows.append(Row("speed", name, peak, results["ours"]["peak_growth_bytes" if not gpu else "peak_bytes"] / 2 ** 20,
                    "MiB"))
    args = argparse.Namespace(steps=3 if quick else 100, warmup=1 if quick else 2, repeats=1 if quick else 3,
                              cases=["unmasked"], mask_steps=1, device=str(device))
    app = run_size(size, args, G=copy.deepcopy(G_cpu))
    rows.append(Row("speed", name, "app drag / bare steps", app, "x"))
    if goals:
        rows.append(Row("speed", name, "goal: ms per step at 512", ours, "ms", f"<= {GOALS['ms_per_step_512']}",
                        ours <= GOALS["ms_per_step_512"] if gpu else None, "goal"))
        rows.append(Row("speed", name, "goal: official / ours at 512", ratio, "x", f">= {GOALS['official_ratio_512']}",
                        ratio >= GOALS["official_ratio_512"] if gpu else None, "goal"))
        rows.append(Row("speed", name, "goal: app / bare at 512", app, "x", f"<= {GOALS['app_over_bare_512']}",
                        app <= GOALS["app_over_bare_512"] if gpu else None, "goal"))


def photo(rows: list[Row], name: str, G_cpu: torch.nn.Module, device: torch.device, quick: bool,
          goals: bool = False) -> None:
    """Seconds per step of each inversion stage with the pixel loss (the LPIPS weights are a download), the
    time of one LPIPS loss and gradient (random weights, the same cost), and each preset's time from them."""
    from draggan.inversion import LPIPS, InversionConfig, invert
    from draggan.inversion.losses import downsample_to
    from draggan.inversion.presets import PRESETS

    G = copy.deepcopy(G_cpu).to(device)
    with torch.no_grad():
        target = G.synthesis(G.latent_from_seed(1, 0.7), noise_mode="const")
    target = ((target[0].permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    k = 2 if quick else 20
    config = InversionConfig(w_steps=k, wplus_steps=k, pti_steps=k, face_align=False, loss="pixel",
                             w_avg_samples=200 if quick else 10000, preview_every=10 ** 6)
    stamps: dict[str, list[float]] = {}

    def progress(event: Any) -> None:
        _sync(device)
        stamps.setdefault(event.stage, []).append(time.perf_counter())

    t0 = time.perf_counter()
    result = invert(G, target, config, progress=progress)
    _sync(device)
    total = time.perf_counter() - t0
    rate = {stage: statistics.median(np.diff(times)) if len(times) > 1 else 0.0 for stage, times in stamps.items()}
    fixed = max(0.0, total - sum(len(stamps[s]) * rate[s] for s in stamps))
    lpips = LPIPS().to(device)
    image = torch.tensor(target, device=device).permute(2, 0, 1)[None].float() / 127.5 - 1
    times = []
    for _ in range(k):
        x = image.clone().requires_grad_(True)
        _sync(device)
        t1 = time.perf_counter()
        lpips(downsample_to(x, config.loss_max_size), downsample_to(image, config.loss_max_size)).sum().backward()
        _sync(device)
        times.append(time.perf_counter() - t1)
    extra = statistics.median(times)
    for stage in ("w", "w+", "pti"):
        rows.append(Row("photo", name, f"s per {stage} step ({result.loss_name} loss)", rate.get(stage), "s"))
    rows.append(Row("photo", name, "s per LPIPS loss and gradient (added to every step)", extra, "s"))
    for preset, entry in PRESETS.items():      # Fast's smaller projection is costed at full size: an upper bound
        counts = entry.steps
        seconds = fixed + sum(n * (rate.get(stage, 0.0) + extra) for n, stage in zip(counts, ("w", "w+", "pti")))
        rows.append(Row("photo", name, f"{preset} preset {counts}, with LPIPS", seconds, "s"))
        if preset == "Best" and goals:
            rows.append(Row("photo", name, "goal: Best preset at 512", seconds, "s",
                            f"<= {GOALS['best_preset_512_s']}",
                            seconds <= GOALS["best_preset_512_s"] if device.type == "cuda" else None, "goal"))


def load(rows: list[Row], name: str, G_cpu: torch.nn.Module, device: torch.device, folder: Path) -> None:
    """Seconds from `load_generator` (bundled key, or a model folder of the random weights) to the first image."""
    from draggan.checkpoints import load_generator
    from draggan.engine import DragSession
    from draggan.inversion.export import save_tuned_generator

    source = name
    if name.startswith(("ffhq", "tiny")):
        save_tuned_generator(G_cpu, folder / name)
        source = str(folder / name)
    _sync(device)
    t0 = time.perf_counter()
    G = load_generator(source, device)
    DragSession(G, seed=0).render()
    _sync(device)
    rows.append(Row("load", name, "model load to first image", time.perf_counter() - t0, "s"))


def markdown(rows: list[Row], header: str) -> str:
    lines = [f"# {header}", "", "| section | model | measure | value | limit | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "—" if r.value is None else (f"{r.value:.4g}" if math.isfinite(r.value) else "inf")
        lines.append(f"| {r.section} | {r.model} | {r.name} | {value} {r.unit} | {r.limit} | {r.status} |")
    return "\n".join(lines) + "\n"


def _json_number(value: float | None) -> float | str | None:
    """A value for strict JSON: infinities (identical images' PSNR) as the strings "inf" / "-inf"."""
    return value if value is None or math.isfinite(value) else ("inf" if value > 0 else "-inf")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


SECTIONS = ("equality", "forked", "speed", "photo", "load")


class Report:
    """The rows so far and where they go: both files are rewritten after every section, so a run cut short
    (a device's time limit) still leaves what it measured."""

    def __init__(self, out: Path, device: torch.device, quick: bool, steps: int) -> None:
        self.out, self.device, self.quick, self.steps = out, device, quick, steps
        self.rows: list[Row] = []
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()
        self.header = f"gpu_check on {device_name(device)}{' (quick)' if quick else ''}, torch {torch.__version__}"

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self, label: str, model: str, job: Callable[[], None], budget_s: float) -> None:
        """Run one section's `job`; an exception or an exhausted time budget becomes a failed check row."""
        if self.elapsed() > budget_s:
            self.rows.append(Row(label, model, f"skipped: the {budget_s:.0f} s budget was spent", None, "", "run",
                                 False, "check"))
        else:
            t0 = time.perf_counter()
            try:
                job()
            except Exception as exc:  # one broken section must not lose the others' figures
                traceback.print_exc()
                self.rows.append(Row(label, model, f"raised {type(exc).__name__}: {str(exc)[:200]}", None, "",
                                     "no error", False, "check"))
            self.seconds[f"{label} {model}"] = time.perf_counter() - t0
            print(f"[gpu_check] {label} {model}: {time.perf_counter() - t0:.1f} s", flush=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.write()

    def write(self) -> None:
        report = dict(device=str(self.device), device_name=device_name(self.device), quick=self.quick,
                      steps=self.steps, torch=torch.__version__, seconds=self.elapsed(), section_seconds=self.seconds,
                      rows=[dict(dataclasses.asdict(r), value=_json_number(r.value), status=r.status)
                            for r in self.rows])
        (self.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        (self.out / "gpu_check.md").write_text(markdown(self.rows, self.header))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (the CPU test)")
    parser.add_argument("--steps", type=int, default=None, help="steps of the equality drags (default 50; quick 4)")
    parser.add_argument("--out", default=None, help="folder for gpu_check.json and .md (default bench/results)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; quick: 1)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds after which the sections not yet started are skipped (failed)")
    parser.add_argument("--forked-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    steps = args.steps or (4 if args.quick else 50)
    if args.forked_worker:
        print(json.dumps(forked_worker(args.device, args.forked_worker, steps)))
        return 0
    device = torch.device(args.device)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out = Path(args.out or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, device, args.quick, steps)
    rows, budget = report.rows, args.budget
    if "forked" in sections:   # first: the forked worker's parent must not have touched the device yet
        source = "cartoon-faces-64" if args.quick else "cartoon-faces-128"
        report.run("forked", source, lambda: forked_check(rows, device, source, 4 if args.quick else 20), budget)
    if "equality" in sections:
        report.run("equality", "phase_l1", lambda: phase_l1_plans(rows, device, args.quick), budget)
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in models(args.quick).items():
            G_cpu = make()
            goals = name == GOAL_MODEL[args.quick]
            jobs = dict(equality=lambda: equality(rows, name, G_cpu, device, steps),
                        speed=lambda: speed(rows, name, G_cpu, device, args.quick, goals=goals),
                        photo=lambda: photo(rows, name, G_cpu, device, args.quick, goals=goals),
                        load=lambda: load(rows, name, G_cpu, device, Path(tmp)))
            for section in sections:
                if section in jobs:
                    report.run(section, name, jobs[section], budget)
            del G_cpu, jobs
    print(markdown(rows, report.header))
    for r in rows:
        if r.kind == "goal":
            print(f"GOAL {r.status.upper()}: {r.name} = {r.value:.4g} {r.unit} (goal {r.limit})")
    bad = [r for r in rows if r.kind == "check" and not r.ok]
    if bad:
        for r in bad:
            print(f"MISMATCH: {r.section} {r.model} {r.name} = {r.value} (limit {r.limit})", file=sys.stderr)
        print(f"gpu_check FAILED: {len(bad)} mismatches (see {out / 'gpu_check.md'})", file=sys.stderr)
        return 1
    print(f"gpu_check passed: {sum(r.kind == 'check' for r in rows)} checks held in {report.elapsed():.0f} s; "
          f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
