"""Drag accuracy in the DragGAN paper's landmark protocol, on the procedural cartoon-face world.

For N seeded pairs of generated faces (A, B), the keypoint judge detects keypoints on both; a subset of A's
keypoints (1, 5 or all) are dragged to B's positions of the same keypoints with the drag engine; the judge
detects again on the result. Mean Distance (MD, pixels of the generator image) between the dragged
keypoints and their targets is reported before and after, with the mean number of steps and seconds per
step, separately for optimisation in W and in W+.

Usage: python -m bench.drag_quality [--pairs 10] [--max-steps 200] [--spaces w,w+] [--points 1,5,all] [--lr X]
Defaults use the shipped 128×128 generator and judge in checkpoints/ and the zoo's step size for it; numbers
depend on both models, the timing on the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from draggan.checkpoints import load_generator
from draggan.checkpoints.zoo import list_models
from draggan.data.procedural import KEYPOINT_NAMES
from draggan.engine import DragConfig, DragSession
from draggan.training.keypoints import KeypointNet, load_regressor

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GENERATOR = ROOT / "checkpoints" / "cartoon-faces-128"
DEFAULT_JUDGE = ROOT / "checkpoints" / "cartoon-faces-keypoints-128"
PAPER_LR = 2e-3  # the paper's drag step size for its face, cat and car models
POINT_SETS = {
    "1": ("nose",),
    "5": ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"),
    "all": KEYPOINT_NAMES,
}


@dataclasses.dataclass
class DragOutcome:
    """One dragged pair: mean judge distance to the targets before/after, steps taken, seconds they took."""

    md_before: float
    md_after: float
    steps: int
    seconds: float


def detect(judge: KeypointNet, image: np.ndarray) -> np.ndarray:
    """Judge keypoints [K, 2] (x, y) on a uint8 [H, W, 3] image."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 127.5 - 1
    with torch.no_grad():
        return judge(x)[0].numpy()


def drag_pair(G: torch.nn.Module, judge: KeypointNet, seed_a: int, seed_b: int, names: tuple[str, ...],
              cfg: DragConfig, psi: float) -> DragOutcome:
    """Drag A's `names` keypoints to where the judge finds them on B; measure with the judge."""
    idx = [KEYPOINT_NAMES.index(n) for n in names]
    max_steps = cfg.max_steps
    image_b = DragSession(G, seed=seed_b, psi=psi, config=cfg).render()
    session = DragSession(G, seed=seed_a, psi=psi, config=cfg)
    kp_a = detect(judge, session.render())[idx]
    kp_b = detect(judge, image_b)[idx]
    height, width = session.height, session.width
    handles = [(float(np.clip(x, 0, width - 1)), float(np.clip(y, 0, height - 1))) for x, y in kp_a]
    targets = [(float(np.clip(x, 0, width - 1)), float(np.clip(y, 0, height - 1))) for x, y in kp_b]
    session.set_points(handles, targets)
    start = time.perf_counter()
    steps = 0
    last = None
    for result in session.run(max_steps=max_steps, render_every=0):
        steps = result.step
        last = result
    seconds = time.perf_counter() - start
    image = last.image if last is not None and last.image is not None else session.render()
    kp_after = detect(judge, image)[idx]
    before = float(np.linalg.norm(kp_a - kp_b, axis=1).mean())
    after = float(np.linalg.norm(kp_after - kp_b, axis=1).mean())
    return DragOutcome(before, after, steps, seconds)


def run_benchmark(G: torch.nn.Module, judge: KeypointNet, pairs: int, max_steps: int, spaces: list[str],
                  point_sets: list[str], psi: float = 1.0, seed: int = 0,
                  drag: DragConfig | None = None) -> list[dict]:
    """Rows of the results table: one per (space, point set), averaged over `pairs` seeded pairs.

    `drag` gives the engine's other settings (lr, radii, ...); its space and max_steps are replaced.
    """
    base = drag if drag is not None else DragConfig(lr=PAPER_LR)
    rows = []
    for space in spaces:
        cfg = dataclasses.replace(base, space=space, max_steps=max_steps)
        for key in point_sets:
            outcomes = [drag_pair(G, judge, seed + 2 * i, seed + 2 * i + 1, POINT_SETS[key], cfg, psi)
                        for i in range(pairs)]
            before = statistics.mean(o.md_before for o in outcomes)
            after = statistics.mean(o.md_after for o in outcomes)
            rows.append(dict(space=space, points=key, pairs=pairs, md_before=before, md_after=after,
                             ratio=after / before if before > 0 else float("nan"),
                             steps=statistics.mean(o.steps for o in outcomes),
                             seconds_per_step=sum(o.seconds for o in outcomes)
                             / max(sum(o.steps for o in outcomes), 1)))
    return rows


def default_lr(generator: str | Path) -> float:
    """The zoo's recommended step size (`drag_lr`) for a zoo key or a bundled model's folder, else `PAPER_LR`."""
    path = Path(generator).resolve()
    for entry in list_models():
        if str(generator) == entry.key or entry.local_path == path:
            return entry.drag_lr or PAPER_LR
    return PAPER_LR


def format_table(rows: list[dict]) -> str:
    """Markdown table of `run_benchmark` rows."""
    lines = ["| space | points | pairs | MD before (px) | MD after (px) | after / before | steps | s / step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['space']} | {r['points']} | {r['pairs']} | {r['md_before']:.2f} | {r['md_after']:.2f} "
                     f"| {r['ratio']:.0%} | {r['steps']:.0f} | {r['seconds_per_step']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=str(DEFAULT_GENERATOR))
    parser.add_argument("--judge", default=str(DEFAULT_JUDGE))
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--spaces", default="w,w+")
    parser.add_argument("--points", default="1,5,all")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation of both faces of a pair")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"drag step size (default: the zoo's drag_lr for the model, else {PAPER_LR})")
    parser.add_argument("--r1", type=float, default=DragConfig.r1, help="motion-supervision radius (512-px scale)")
    parser.add_argument("--r2", type=float, default=DragConfig.r2, help="point-tracking radius (512-px scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="where the generator runs (the judge stays on the CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator(args.generator, device=args.device)
    judge = load_regressor(args.judge)
    points = args.points.split(",")
    unknown = [p for p in points if p not in POINT_SETS]
    if unknown:
        parser.error(f"--points: unknown sets {unknown}; choose from {sorted(POINT_SETS)}")
    lr = args.lr if args.lr is not None else default_lr(args.generator)
    print(f"generator {args.generator}, drag lr {lr}", flush=True)
    drag = DragConfig(lr=lr, r1=args.r1, r2=args.r2)
    rows = run_benchmark(G, judge, args.pairs, args.max_steps, args.spaces.split(","), points, psi=args.psi,
                         seed=args.seed, drag=drag)
    print(format_table(rows))


if __name__ == "__main__":
    main()
