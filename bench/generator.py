"""Milliseconds per 512×512 generator forward (random weights, FFHQ-512 StyleGAN2 config).

Usage: python -m bench.generator [--device cpu|cuda|mps] [--runs 5] [--threads N] [--batch 1]
Prints the parameter count, load-free forward timings (mapping + synthesis, noise_mode='const') and the
median. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from draggan.networks.stylegan2 import Generator


def ffhq_generator(resolution: int = 512) -> Generator:
    """Random-weight generator with the config of NVIDIA's stylegan2-ffhq-512x512.pkl (at 1024: that of
    stylegan2-ffhq-1024x1024.pkl, the same config one block larger; any power of two works)."""
    return Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=8),
                     synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    G = ffhq_generator().eval().requires_grad_(False).to(device)
    n_params = sum(p.numel() for p in G.parameters())
    z = torch.randn(args.batch, G.z_dim, device=device)
    times = []
    with torch.no_grad():
        G(z, truncation_psi=0.7, noise_mode="const")  # warm-up
        for _ in range(args.runs):
            _sync(device)
            t0 = time.perf_counter()
            img = G(z, truncation_psi=0.7, noise_mode="const")
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    print(f"device={device} threads={torch.get_num_threads()} params={n_params / 1e6:.1f}M "
          f"batch={args.batch} out={tuple(img.shape)}")
    print(f"forward ms: {' '.join(f'{t:.0f}' for t in times)}")
    print(f"median ms per forward: {statistics.median(times):.0f}")


if __name__ == "__main__":
    main()
