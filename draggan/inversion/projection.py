"""Optimisation-based projection of an image into a generator's latent space: W first, then W+.

Follows the recipe of NVIDIA's StyleGAN2-ADA projector: start at the average w, add decaying Gaussian noise
to the latent early on, cosine ramp the learning rate up and down, and optimise the per-layer noise maps too,
regularised towards spatially uncorrelated noise. The W+ stage then refines one w per layer from the W optimum.
With `project_size` the projection fits the generator's image at a smaller size (`image_at`: the blocks above
it are not run, forwards or backwards) to the target area-downsampled to it: the latent's coarse structure
is what that image shows, and the pivotal tuning that follows fits the full-size detail. With `project_bf16`
the image and the loss are computed under bfloat16 autocast where the CPU runs it (`projection_dtype`).
The noise maps live in per-call tensors passed to `synthesis(noise_bufs=…)`: the generator is never modified,
so one shared network can serve many concurrent inversions.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..networks.stylegan2_render import preview_dtype
from .config import InversionConfig, StepTracker
from .losses import ReconstructionLoss, downsample_to


@dataclasses.dataclass
class Projection:
    """Result of `project`: the W+ latent and the fitted noise maps (empty when not optimised)."""

    ws: torch.Tensor                      # [1, num_ws, w_dim]
    noise_bufs: dict[str, torch.Tensor]   # synthesis buffer name → tensor, for `synthesis(noise_bufs=…)`


def projection_resolution(G: torch.nn.Module, project_size: int) -> int:
    """The image height the projection fits: the smallest the synthesis network can stop at that is at least
    `project_size` (0: the full height)."""
    sizes = [r for r in G.synthesis.image_resolutions() if r >= project_size] if project_size > 0 else []
    return min(sizes) if sizes else G.img_height


def projection_dtype(G: torch.nn.Module, config: InversionConfig, device: torch.device) -> torch.dtype:
    """The dtype the projection computes its image and loss in: bfloat16 where `config.project_bf16` asks for
    it, the device is a CPU whose oneDNN runs bfloat16 convolutions (`preview_dtype`, as the drag's preview)
    and the model a StyleGAN2 (where it was measured); else float32. Latents, noise maps, Adam and the
    tuning stay float32: the bfloat16 gradients only steer a few dozen sign-like Adam steps."""
    use = config.project_bf16 and device.type == "cpu" and G.family == "stylegan2"
    return preview_dtype() if use else torch.float32


def synthesize(G: torch.nn.Module, ws: torch.Tensor, noise_bufs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Image of `ws` with constant noise, using `noise_bufs` instead of the generator's own maps if given."""
    if noise_bufs:
        return G.synthesis(ws, noise_mode="const", noise_bufs=noise_bufs)
    return G.synthesis(ws, noise_mode="const")


def sample_ws(G: torch.nn.Module, num: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`num` latents from the mapping network at ψ = 1 (random one-hot labels for conditional models)."""
    z = torch.randn([num, G.z_dim], generator=generator).to(device)
    c = None
    if G.c_dim > 0:
        labels = torch.randint(0, G.c_dim, [num], generator=generator)
        c = F.one_hot(labels, G.c_dim).to(device=device, dtype=torch.float32)
    return G.mapping(z, c, truncation_psi=1)


@torch.no_grad()
def w_statistics(G: torch.nn.Module, num_samples: int, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, float]:
    """Mean w [1, 1, w_dim] and the root-mean-square distance of samples from it (w's spread)."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.cat([sample_ws(G, min(1000, num_samples - i), generator, device)[:, :1]
                   for i in range(0, num_samples, 1000)])
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = float((w - w_avg).square().sum(dim=(1, 2)).mean().sqrt())
    return w_avg, w_std


def stage_progress(step: int, steps: int) -> float:
    """Where step `step` of `steps` lies in its stage, in (0, 1): its midpoint. At `step / steps` the first
    step of every stage ran at zero learning rate, a quarter of a 4-step tuning pass (the Fast preset)."""
    return (step + 0.5) / steps


def lr_schedule(t: float, rampup: float, rampdown: float) -> float:
    """Learning-rate multiplier at stage progress t ∈ [0, 1): cosine ramp up over `rampup`, down over `rampdown`."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * (min(1.0, t / rampup) if rampup > 0 else 1.0)


def noise_regularizer(noise_bufs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of squared one-pixel autocorrelations of each noise map, at every 2× coarser scale down to 8 px."""
    reg = next(iter(noise_bufs.values())).new_zeros([])
    for buf in noise_bufs.values():
        noise = buf[None, None]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if min(noise.shape[2], noise.shape[3]) <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


@torch.no_grad()
def _normalize_noise(noise_bufs: dict[str, torch.Tensor]) -> None:
    for buf in noise_bufs.values():
        buf -= buf.mean()
        buf *= buf.square().mean().rsqrt()


def _optimize(G: torch.nn.Module, latent: torch.Tensor, noise_bufs: dict[str, torch.Tensor],
              target: torch.Tensor, loss: ReconstructionLoss, config: InversionConfig, tracker: StepTracker,
              stage: str, steps: int, lr: float, w_std: float, noise_factor: float,
              generator: torch.Generator, resolution: int) -> None:
    """One projection stage: Adam on `latent` ([1, 1 | num_ws, w_dim]) and the noise maps, in place, fitting
    the image at `resolution` (`projection_resolution`) to `target` (already at that size)."""
    params = [latent] + list(noise_bufs.values())
    for p in params:
        p.requires_grad_(True)
    bf16 = projection_dtype(G, config, latent.device) == torch.bfloat16
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=lr)
    for step in range(steps):
        tracker.check_cancel()
        t = stage_progress(step, steps)
        for group in opt.param_groups:
            group["lr"] = lr * lr_schedule(t, config.lr_rampup, config.lr_rampdown)
        scale = w_std * noise_factor * max(0.0, 1.0 - t / config.noise_ramp_length) ** 2
        w = latent + torch.randn(latent.shape, generator=generator).to(latent.device) * scale
        ws = w.expand(-1, G.num_ws, -1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            synth = (synthesize(G, ws, noise_bufs) if resolution == G.img_height
                     else G.synthesis.image_at(ws, resolution, noise_mode="const", noise_bufs=noise_bufs,
                                               fused_modconv=False)).float()
            dist = loss(synth, target).float()
        total = dist
        if noise_bufs:
            total = total + noise_regularizer(noise_bufs) * config.noise_reg_weight
        # autograd.grad touches only our tensors, never `.grad` of the shared generator's parameters.
        grads = torch.autograd.grad(total, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        if noise_bufs:
            _normalize_noise(noise_bufs)
        tracker.record(stage, float(dist.detach()), synth, last_of_stage=step == steps - 1)
    for p in params:
        p.requires_grad_(False)
        p.grad = None


def project(G: torch.nn.Module, target: torch.Tensor, loss: ReconstructionLoss, config: InversionConfig,
            tracker: StepTracker) -> Projection:
    """Find the latent (and noise maps) whose image best matches `target` ([1, C, H, W] in [-1, 1])."""
    assert target.ndim == 4 and target.shape[0] == 1 and \
        tuple(target.shape[1:]) == (G.img_channels, G.img_height, G.img_width), \
        f"target must be [1, {G.img_channels}, {G.img_height}, {G.img_width}], got {tuple(target.shape)}"
    device = target.device
    generator = torch.Generator().manual_seed(config.seed)
    w_avg, w_std = w_statistics(G, config.w_avg_samples, config.seed, device)
    noise_bufs: dict[str, torch.Tensor] = {}
    if config.optimize_noise:
        noise_bufs = {name: torch.randn(shape, generator=generator).to(device)
                      for name, shape in G.synthesis.noise_shapes().items()}
    latent = w_avg.detach().clone()
    resolution = projection_resolution(G, config.project_size)
    if resolution != G.img_height:
        target = downsample_to(target, resolution)
    _optimize(G, latent, noise_bufs, target, loss, config, tracker, "w", config.w_steps, config.lr,
              w_std, config.initial_noise_factor, generator, resolution)
    latent = latent.detach().repeat(1, G.num_ws, 1)
    _optimize(G, latent, noise_bufs, target, loss, config, tracker, "w+", config.wplus_steps, config.wplus_lr,
              w_std, 0.0, generator, resolution)
    return Projection(ws=latent.detach(), noise_bufs={k: v.detach() for k, v in noise_bufs.items()})
