"""Time and peak memory of converting a full-size upload in the sandbox (`convert_untrusted`).

Usage: python -m bench.convert_untrusted [--resolution 1024] [--keep PATH]
Builds a random-weight StyleGAN2 with FFHQ-1024's config (30 M parameters), writes it in NVIDIA's pickle
layout with `G`, `G_ema` and a same-sized stand-in `D` (~360 MB, like stylegan2-ffhq-1024x1024.pkl), then
converts it once through `draggan.checkpoints.sandbox.convert_report` with the default limits into a fresh
cache folder. Prints the file size, the child's wall time and peak RSS, the limits, and the server
process's RSS before and after (it must not grow by the model's size). Not a test: numbers depend on
the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from bench.generator import ffhq_generator
from bench.nvidia_format import write_nvidia_pickle
from bench.soak import rss_mb
from draggan.checkpoints.sandbox import SandboxLimits, convert_report
from draggan.networks.stylegan2 import Generator


def _generator(resolution: int) -> Generator:
    return ffhq_generator(resolution).eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--keep", type=Path, default=None, help="write the pickle here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkl = args.keep or Path(tmp) / f"random-ffhq-{args.resolution}.pkl"
        if not pkl.is_file():
            t = time.perf_counter()
            torch.manual_seed(0)
            write_nvidia_pickle(pkl, _generator(args.resolution), G=_generator(args.resolution),
                                D=_generator(args.resolution))
            print(f"wrote {pkl.name}: {pkl.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s")
        os.environ["DRAGGAN_CACHE"] = str(Path(tmp) / "cache")
        limits = SandboxLimits.from_env()
        before = rss_mb(os.getpid())
        report = convert_report(pkl, limits=limits)
        after = rss_mb(os.getpid())
        print(f"input {pkl.stat().st_size / 2**20:.0f} MB; limits: {limits.max_rss_mb:.0f} MB RSS, "
              f"{limits.wall_s:.0f} s wall, {limits.cpu_s:.0f} s CPU")
        print(f"converted in {report.wall_s:.1f} s wall, child peak RSS {report.peak_rss_mb:.0f} MB")
        print(f"server process RSS {before:.0f} -> {after:.0f} MB "
              f"(max {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB incl. writing the pickle)")


if __name__ == "__main__":
    main()
