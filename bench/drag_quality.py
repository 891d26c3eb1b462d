"""Drag quality as users see it, on the procedural cartoon-face world whose keypoints a judge reads.

Protocol (the DragGAN paper's landmarks): for seeded pairs of generated faces (A, B) the keypoint judge
detects the 11 keypoints on both; a subset of A's keypoints (1, 5 or all) is dragged to B's positions of the
same keypoints by the drag engine; the judge detects again on the result. Per (tracker, space, points):

- MD before / after: mean judge distance of the dragged keypoints to their targets (pixels), and their ratio;
- tracking error: distance between the engine's tracked handle and the judge's keypoint on the final image;
  a tracking failure is an error above 3 px at 128 px image height (scaled with the height) — the handle the
  user sees is not on the feature it was put on;
- collateral drift: mean movement of the keypoints that were not dragged (n/a when all are dragged);
- mirror consistency (FreeDrag's CCSD idea): from the result, drag the targets back to the handles with the
  same settings and compare the image with the original A: mean L1 in [0, 1] pixel units, and LPIPS when its
  weights are in the local Hub cache (never downloaded here; "n/a" otherwise);
- steps (to arrival, or the step limit), the share of drags whose handles all arrived, seconds per step;
- curves: the judge's mean distance every `--curve-every` steps, for the plot.

Seeds 0–19 and 100–119 were used during development; the default `--seed 1000` pairs are held out.
Drags run as parallel one-thread worker processes (`--jobs`, default: all cores). The default run (20
pairs, 5 points, W and W+, all five trackers of the time, ≤ 200 steps, with the mirror drags) took 14.5 minutes on 2
idle cores (peak 550 MB); `--full` adds the 1-point and all-point sets (about twice as long again).

Usage:
  python -m bench.drag_quality [--pairs 20] [--tracker official,freedrag-ms,freedrag-local|all] [--spaces w,w+] [--points 5]
                               [--full] [--jobs N] [--json out.json] [--plot out.png] [--markdown]
  python -m bench.drag_quality --from-json a.json,b.json --markdown [--plot p.png]   # table of saved runs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from draggan.checkpoints import load_generator
from draggan.checkpoints.zoo import list_models
from draggan.data.procedural import KEYPOINT_NAMES
from draggan.engine import DragConfig, DragSession
from draggan.engine import methods
from draggan.training.keypoints import KeypointNet, load_regressor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GENERATOR = ROOT / "checkpoints" / "cartoon-faces-128"
DEFAULT_JUDGE = ROOT / "checkpoints" / "cartoon-faces-keypoints-128"
PAPER_LR = 2e-3  # the paper's drag step size for its face, cat and car models
HELD_OUT_SEED = 1000
FAIL_PX_AT_128 = 3.0
POINT_SETS = {
    "1": ("nose",),
    "5": ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"),
    "all": KEYPOINT_NAMES,
}


@dataclasses.dataclass
class DragOutcome:
    """One dragged pair (see the module docstring for each measure); distances in generator pixels."""

    md_before: float
    md_after: float
    steps: int
    seconds: float
    arrived: bool = False
    track_errors: list[float] = dataclasses.field(default_factory=list)  # per dragged point
    drift: float = float("nan")         # mean movement of the keypoints not dragged
    mirror_l1: float = float("nan")
    mirror_lpips: float = float("nan")
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, judge MD)


def detect(judge: KeypointNet, image: np.ndarray) -> np.ndarray:
    """Judge keypoints [K, 2] (x, y) on a uint8 [H, W, 3] image."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1
    with torch.no_grad():
        return judge(x)[0].numpy()


def _clip_points(points: np.ndarray, width: int, height: int) -> list[tuple[float, float]]:
    return [(float(np.clip(x, 0, width - 1)), float(np.clip(y, 0, height - 1))) for x, y in points]


def _drive(session: DragSession, max_steps: int, judge: KeypointNet | None, idx: list[int],
           targets: np.ndarray, curve_every: int) -> tuple[list, int, float, bool, list[tuple[int, float]]]:
    """Step a session to arrival or max_steps; returns (last handles, steps, seconds, arrived, judge curve)."""
    curve = []
    if judge is not None and curve_every > 0:
        curve.append((0, float(np.linalg.norm(detect(judge, session.render())[idx] - targets, axis=1).mean())))
    seconds, steps, handles, arrived = 0.0, 0, session.handles, False
    for i in range(max_steps):
        result = session.step()
        seconds += result.seconds
        steps, handles, arrived = result.step, result.handles, result.done
        if judge is not None and curve_every > 0 and (arrived or (i + 1) % curve_every == 0 or i == max_steps - 1):
            kp = detect(judge, session.render())[idx]
            curve.append((steps, float(np.linalg.norm(kp - targets, axis=1).mean())))
        if arrived:
            break
    return handles, steps, seconds, arrived, curve


def drag_pair(G: torch.nn.Module, judge: KeypointNet, seed_a: int, seed_b: int, names: tuple[str, ...],
              cfg: DragConfig, psi: float, mirror: bool = True, curve_every: int = 10,
              lpips: torch.nn.Module | None = None) -> DragOutcome:
    """Drag A's `names` keypoints to where the judge finds them on B, then (mirror) back; measure with the judge."""
    idx = [KEYPOINT_NAMES.index(n) for n in names]
    rest = [i for i in range(len(KEYPOINT_NAMES)) if i not in idx]
    image_b = DragSession(G, seed=seed_b, psi=psi, config=cfg).render()
    session = DragSession(G, seed=seed_a, psi=psi, config=cfg)
    image_a = session.render()
    kp_a_all = detect(judge, image_a)
    kp_a, kp_b = kp_a_all[idx], detect(judge, image_b)[idx]
    height, width = session.height, session.width
    handles, targets = _clip_points(kp_a, width, height), _clip_points(kp_b, width, height)
    session.set_points(handles, targets)
    tracked, steps, seconds, arrived, curve = _drive(session, cfg.max_steps, judge, idx, kp_b, curve_every)
    image = session.render()
    kp_after_all = detect(judge, image)
    kp_after = kp_after_all[idx]
    out = DragOutcome(md_before=float(np.linalg.norm(kp_a - kp_b, axis=1).mean()),
                      md_after=float(np.linalg.norm(kp_after - kp_b, axis=1).mean()),
                      steps=steps, seconds=seconds, arrived=arrived, curve=curve,
                      track_errors=[float(e) for e in np.linalg.norm(np.asarray(tracked) - kp_after, axis=1)])
    if rest:
        out.drift = float(np.linalg.norm(kp_after_all[rest] - kp_a_all[rest], axis=1).mean())
    if mirror:
        back = DragSession(G, w=session.ws, config=cfg)
        back.set_points(targets, handles)
        _drive(back, cfg.max_steps, None, idx, kp_a, 0)
        image_back = back.render()
        out.mirror_l1 = float(np.abs(image_back.astype(np.float64) - image_a.astype(np.float64)).mean() / 255)
        if lpips is not None:
            pair = [torch.from_numpy(im).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1
                    for im in (image_back, image_a)]
            with torch.no_grad():
                out.mirror_lpips = float(lpips(*pair)[0])
    return out


def find_lpips() -> torch.nn.Module | None:
    """LPIPS-VGG16 from the local Hub cache (the inversion's files), or None; never touches the network."""
    try:
        from draggan.checkpoints.hub import HubRef, cached_hub_file
        from draggan.inversion.config import InversionConfig
        from draggan.inversion.losses import load_lpips
        cfg = InversionConfig()
        vgg = cached_hub_file(HubRef(cfg.vgg16_repo, cfg.vgg16_file, cfg.vgg16_revision))
        head = cached_hub_file(HubRef(cfg.lpips_repo, cfg.lpips_file, cfg.lpips_revision))
        return None if vgg is None or head is None else load_lpips(vgg, head)
    except Exception:  # a partial or unreadable cache: measure without LPIPS, as offline
        return None


# ---------------------------------------------------------------------------------------------- running

@dataclasses.dataclass(frozen=True)
class Task:
    """One pair to drag: which tracker, space and point set, and the pair's two seeds."""

    tracker: str
    space: str
    points: str
    pair: int
    seed_a: int
    seed_b: int


_WORKER: dict = {}


def _init_worker(generator: str, judge: str, device: str, base: dict, psi: float, mirror: bool,
                 curve_every: int, threads: int = 1) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(G=load_generator(generator, device=device), judge=load_regressor(judge), base=base, psi=psi,
                   mirror=mirror, curve_every=curve_every, lpips=find_lpips() if mirror else None)


def _run_task(task: Task) -> tuple[Task, DragOutcome]:
    w = _WORKER
    cfg = DragConfig(**{**w["base"], "space": task.space, "tracker": task.tracker})
    return task, drag_pair(w["G"], w["judge"], task.seed_a, task.seed_b, POINT_SETS[task.points], cfg, w["psi"],
                           mirror=w["mirror"], curve_every=w["curve_every"], lpips=w["lpips"])


def make_tasks(pairs: int, trackers: list[str], spaces: list[str], point_sets: list[str], seed: int) -> list[Task]:
    return [Task(t, s, p, i, seed + 2 * i, seed + 2 * i + 1)
            for t in trackers for s in spaces for p in point_sets for i in range(pairs)]


def run_tasks(tasks: list[Task], generator: str | Path, judge: str | Path, drag: DragConfig, psi: float = 1.0,
              mirror: bool = True, curve_every: int = 10, jobs: int = 1, device: str = "cpu",
              progress=None, threads: int = 1) -> list[tuple[Task, DragOutcome]]:
    """Run every task in `jobs` worker processes of `threads` torch threads (in this process when jobs == 1)."""
    base = dataclasses.asdict(drag)
    init = (str(generator), str(judge), device, base, psi, mirror, curve_every, threads)
    done: list[tuple[Task, DragOutcome]] = []
    if jobs <= 1:
        saved = dict(_WORKER)
        saved_threads = torch.get_num_threads()
        try:
            _init_worker(*init)
            for task in tasks:
                done.append(_run_task(task))
                if progress:
                    progress(len(done), len(tasks), *done[-1])
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
            torch.set_num_threads(saved_threads)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs, initializer=_init_worker, initargs=init) as pool:
            for item in pool.imap_unordered(_run_task, tasks):
                done.append(item)
                if progress:
                    progress(len(done), len(tasks), *item)
    order = {t: i for i, t in enumerate(tasks)}
    return sorted(done, key=lambda item: order[item[0]])


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.mean(values) if values else float("nan")


def summarise(results: list[tuple[Task, DragOutcome]], height: int) -> list[dict]:
    """One row per (tracker, space, points), in first-seen order, averaged over its pairs."""
    fail_px = FAIL_PX_AT_128 * height / 128
    groups: dict[tuple[str, str, str], list[DragOutcome]] = {}
    for task, outcome in results:
        groups.setdefault((task.tracker, task.space, task.points), []).append(outcome)
    rows = []
    for (tracker, space, points), outs in groups.items():
        before, after = _mean(o.md_before for o in outs), _mean(o.md_after for o in outs)
        errors = [e for o in outs for e in o.track_errors]
        total_steps = sum(o.steps for o in outs)
        rows.append(dict(tracker=tracker, space=space, points=points, pairs=len(outs), md_before=before,
                         md_after=after, ratio=after / before if before > 0 else float("nan"),
                         track_error=_mean(errors),
                         track_fail=sum(e > fail_px for e in errors) / len(errors) if errors else float("nan"),
                         drift=_mean(o.drift for o in outs), mirror_l1=_mean(o.mirror_l1 for o in outs),
                         mirror_lpips=_mean(o.mirror_lpips for o in outs),
                         steps=_mean(o.steps for o in outs), arrived=_mean(float(o.arrived) for o in outs),
                         seconds_per_step=sum(o.seconds for o in outs) / max(total_steps, 1)))
    return rows


def mean_curves(results: list[tuple[Task, DragOutcome]]) -> dict[str, dict[int, float]]:
    """Per 'tracker space points': the judge's MD at each recorded step, averaged over pairs; a drag that
    arrived early keeps its last value for the later steps."""
    by_group: dict[str, list[dict[int, float]]] = {}
    for task, outcome in results:
        by_group.setdefault(f"{task.tracker} {task.space} {task.points}", []).append(dict(outcome.curve))
    curves = {}
    for key, runs in by_group.items():
        steps = sorted({s for run in runs for s in run})
        mean = {}
        for s in steps:
            values = []
            for run in runs:
                known = [k for k in run if k <= s]
                if known:
                    values.append(run[max(known)])
            mean[s] = statistics.mean(values)
        curves[key] = mean
    return curves


def plot_curves(curves: dict[str, dict[int, float]], path: str | Path) -> None:
    """Mean judge distance over steps (matplotlib, PNG): a panel per point set, a colour per tracker, solid
    W+ and dashed W; curve keys are "tracker space points"."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [key.split(" ") for key in curves]
    point_sets = list(dict.fromkeys(points for _, _, points in keys))
    trackers = list(dict.fromkeys(tracker for tracker, _, _ in keys))
    fig, axes = plt.subplots(1, len(point_sets), figsize=(3.6 * len(point_sets) + 1.6, 3.8), dpi=110,
                             sharey=True, squeeze=False)
    for (tracker, space, points), curve in zip(keys, curves.values()):
        ax = axes[0][point_sets.index(points)]
        steps = sorted(curve)
        ax.plot(steps, [curve[s] for s in steps], color=f"C{trackers.index(tracker) % 10}",
                linestyle="-" if space == "w+" else "--", label=f"{tracker} {space}")
    for ax, points in zip(axes[0], point_sets):
        ax.set_title(f"{points} point{'s' if points != '1' else ''}")
        ax.set_xlabel("drag step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean distance to target (px, judge)")
    handles = {}
    for ax in axes[0]:
        for line, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, line)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(rows: list[dict]) -> str:
    """Markdown table of `summarise` rows."""
    lines = ["| tracker | space | points | pairs | MD before (px) | MD after (px) | after / before | track fail "
             "| track err (px) | drift (px) | mirror L1 | mirror LPIPS | steps | arrived | s / step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.get('tracker', 'official')} | {r['space']} | {r['points']} | {r['pairs']} "
                     f"| {r['md_before']:.2f} | {r['md_after']:.2f} | {_fmt(r['ratio'], '.0%')} "
                     f"| {_fmt(r.get('track_fail'), '.0%')} | {_fmt(r.get('track_error'), '.2f')} "
                     f"| {_fmt(r.get('drift'), '.2f')} | {_fmt(r.get('mirror_l1'), '.4f')} "
                     f"| {_fmt(r.get('mirror_lpips'), '.4f')} | {r['steps']:.0f} | {_fmt(r.get('arrived'), '.0%')} "
                     f"| {r['seconds_per_step']:.4f} |")
    return "\n".join(lines)


def run_benchmark(G: torch.nn.Module, judge: KeypointNet, pairs: int, max_steps: int, spaces: list[str],
                  point_sets: list[str], psi: float = 1.0, seed: int = 0, drag: DragConfig | None = None,
                  trackers: list[str] | None = None, mirror: bool = False, curve_every: int = 0) -> list[dict]:
    """In-process rows of the results table for already-loaded models (one per tracker, space, point set).

    `drag` gives the engine's other settings (lr, radii, ...); its space, tracker and max_steps are replaced.
    """
    base = dataclasses.replace(drag if drag is not None else DragConfig(lr=PAPER_LR), max_steps=max_steps)
    lpips = find_lpips() if mirror else None
    results = []
    for task in make_tasks(pairs, trackers or [base.tracker], spaces, point_sets, seed):
        cfg = dataclasses.replace(base, space=task.space, tracker=task.tracker)
        results.append((task, drag_pair(G, judge, task.seed_a, task.seed_b, POINT_SETS[task.points], cfg, psi,
                                        mirror=mirror, curve_every=curve_every, lpips=lpips)))
    return summarise(results, int(G.img_height))


def default_lr(generator: str | Path) -> float:
    """The zoo's recommended step size (`drag_lr`) for a zoo key or a bundled model's folder, else `PAPER_LR`."""
    path = Path(generator).resolve()
    for entry in list_models():
        if str(generator) == entry.key or entry.local_path == path:
            return entry.drag_lr or PAPER_LR
    return PAPER_LR


def _split(value: str, allowed: tuple[str, ...], flag: str, parser: argparse.ArgumentParser,
           every: str | None = None) -> list[str]:
    """A comma list of names from `allowed`; the word `every` (when given) stands for all of them."""
    items = list(allowed) if every is not None and value == every else [v for v in value.split(",") if v]
    unknown = [v for v in items if v not in allowed]
    if unknown or not items:
        hint = f" or '{every}'" if every else ""
        parser.error(f"{flag}: unknown {unknown or value!r}; choose from {', '.join(allowed)}{hint}")
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=str(DEFAULT_GENERATOR))
    parser.add_argument("--judge", default=str(DEFAULT_JUDGE))
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--tracker", default="all",
                        help=f"comma list of drag methods ({', '.join(methods.names())}), or 'all'")
    parser.add_argument("--spaces", default="w,w+")
    parser.add_argument("--points", default="5", help="comma list of point sets: 1, 5, all (all 11 keypoints)")
    parser.add_argument("--full", action="store_true", help="the full grid: every point set (1, 5, all)")
    parser.add_argument("--no-mirror", action="store_true", help="skip the mirror drag (halves the time)")
    parser.add_argument("--curve-every", type=int, default=10, help="judge the image every N steps for the plot")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation of both faces of a pair")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"drag step size (default: the zoo's drag_lr for the model, else {PAPER_LR})")
    parser.add_argument("--r1", type=float, default=DragConfig.r1, help="motion-supervision radius (512-px scale)")
    parser.add_argument("--r2", type=float, default=DragConfig.r2, help="point-tracking radius (512-px scale)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="pair i uses seeds seed+2i, seed+2i+1")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu", help="where the generator runs (the judge stays on the CPU)")
    parser.add_argument("--json", default=None, help="write rows, curves and per-pair results here")
    parser.add_argument("--plot", default=None, help="write the mean-distance-over-steps plot here (PNG)")
    parser.add_argument("--markdown", action="store_true", help="print the README table on stdout (the default without --json/--plot)")
    parser.add_argument("--from-json", default=None,
                        help="no drags: table/plot from saved --json runs (comma list, rows in that order)")
    args = parser.parse_args(argv)

    if args.from_json:
        rows, curves = [], {}
        for name in args.from_json.split(","):
            saved = json.loads(Path(name).read_text())
            rows += saved["rows"]
            curves.update({k: {int(s): v for s, v in c.items()} for k, c in saved["curves"].items()})
    else:
        trackers = _split(args.tracker, methods.names(), "--tracker", parser, every="all")
        spaces = _split(args.spaces, ("w", "w+"), "--spaces", parser)
        point_sets = list(POINT_SETS) if args.full else _split(args.points, tuple(POINT_SETS), "--points", parser)
        if min(args.pairs, args.max_steps, args.jobs, args.threads) < 1:
            parser.error("--pairs, --max-steps, --jobs and --threads must be ≥ 1")
        lr = args.lr if args.lr is not None else default_lr(args.generator)
        drag = DragConfig(lr=lr, r1=args.r1, r2=args.r2, max_steps=args.max_steps)
        tasks = make_tasks(args.pairs, trackers, spaces, point_sets, args.seed)
        mirror = not args.no_mirror
        print(f"generator {Path(args.generator).name}, lr {lr}, {len(tasks)} drags{' + mirrors' if mirror else ''}"
              f", {args.jobs} jobs, LPIPS {'cached' if mirror and find_lpips() is not None else 'n/a'}",
              file=sys.stderr, flush=True)
        start = time.perf_counter()

        def progress(k: int, n: int, task: Task, o: DragOutcome) -> None:
            print(f"[{k}/{n} {time.perf_counter() - start:.0f}s] {task.tracker} {task.space} {task.points}pt "
                  f"pair {task.pair}: MD {o.md_before:.2f} -> {o.md_after:.2f} px, {o.steps} steps, "
                  f"track err {max(o.track_errors):.2f} px, mirror L1 {_fmt(o.mirror_l1, '.4f')}",
                  file=sys.stderr, flush=True)

        results = run_tasks(tasks, args.generator, args.judge, drag, psi=args.psi, mirror=mirror,
                            curve_every=args.curve_every, jobs=args.jobs, device=args.device, progress=progress,
                            threads=args.threads)
        height = int(load_generator(args.generator, device="cpu").img_height)
        rows, curves = summarise(results, height), mean_curves(results)
        if args.json:
            Path(args.json).write_text(json.dumps(dict(
                config=dict(vars(args), lr=lr, trackers=trackers, spaces=spaces, point_sets=point_sets,
                            fail_px=FAIL_PX_AT_128 * height / 128),
                rows=rows, curves=curves,
                pairs=[dict(dataclasses.asdict(t), **dataclasses.asdict(o)) for t, o in results]), indent=1))
    if args.plot:
        plot_curves(curves, args.plot)
    if args.markdown or not (args.json or args.plot):
        print(format_table(rows))


if __name__ == "__main__":
    main()
