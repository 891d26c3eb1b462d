"""How closely renderer-supervised generators draw the procedural world's faces, at one resolution.

For the same seeded latents z, each generator's face (noise "const", ψ 1) is compared with the renderer's face
for z at `--resolution`: mean L1 in [-1, 1] pixel units, and the mean L1 of the horizontal and vertical pixel
differences (edges: a blurred face scores worse on it than a sharp one). A generator below that resolution
is FIR-upsampled to it with its own resampling filter, which is exactly the image a generator grown from it
starts from (`draggan.training.train.grow_state`), so the rows say what training at the higher resolution
added. Not a test: the numbers are for the README and the model cards.

Usage: python -m bench.fidelity [--generator A,B,...] [--resolution 256] [--faces 64] [--seed 2024]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from draggan.checkpoints import load_generator
from draggan.data import procedural
from draggan.networks.ops import upsample2d

ROOT = Path(__file__).resolve().parents[1]


def upsample_to(G: torch.nn.Module, img: torch.Tensor, resolution: int) -> torch.Tensor:
    """img [N, 3, r, r] FIR-upsampled by G's top-block filter until it is resolution px high."""
    filt = getattr(G.synthesis, f"b{G.img_resolution}").resample_filter
    while img.shape[2] < resolution:
        img = upsample2d(img, filt)
    if img.shape[2] != resolution:
        raise ValueError(f"{G.img_resolution} px does not upsample by powers of 2 to {resolution} px")
    return img


def fidelity(G: torch.nn.Module, z: torch.Tensor, resolution: int) -> dict[str, float]:
    """L1 and image-difference L1 of G's faces for z (upsampled to `resolution`) against the renderer's."""
    if G.img_resolution > resolution:
        raise ValueError(f"the generator draws {G.img_resolution} px, more than {resolution}")
    with torch.no_grad():
        real, _ = procedural.render_z(z, resolution)
        fake = upsample_to(G, G(z, None, noise_mode="const"), resolution)
    edges = ((fake.diff(dim=3) - real.diff(dim=3)).abs().mean() + (fake.diff(dim=2) - real.diff(dim=2)).abs().mean()) / 2
    return {"l1": float((fake - real).abs().mean()), "edge_l1": float(edges)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default=f"{ROOT / 'checkpoints' / 'cartoon-faces-128'}",
                        help="comma list of generator folders or zoo keys (renderer-supervised models)")
    parser.add_argument("--resolution", type=int, default=None, help="compare here (default: the largest model's)")
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    if args.faces < 1:
        parser.error("--faces must be ≥ 1")
    models = [(name, load_generator(name, device="cpu")) for name in args.generator.split(",")]
    resolution = args.resolution or max(G.img_resolution for _, G in models)
    z = procedural.sample_z(args.faces, seed=args.seed)
    print(f"| generator | drawn at | L1 to the renderer at {resolution} px | edge L1 |\n|---|---|---|---|")
    for name, G in models:
        row = fidelity(G, z, resolution)
        print(f"| {Path(name).name} | {G.img_resolution} px | {row['l1']:.4f} | {row['edge_l1']:.4f} |")


if __name__ == "__main__":
    main()
