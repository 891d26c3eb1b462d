"""Pivotal tuning (Roich et al., "Pivotal Tuning for Latent-based Editing of Real Images", 2022).

After projection the pivot latent reproduces the photo only roughly. PTI fine-tunes the synthesis weights of
a private copy of the generator so that the pivot reproduces it closely, while edits around the pivot stay
meaningful. The optional locality regulariser keeps the tuned network equal to the original one at latents
sampled a fixed distance away from the pivot. The shared generator is only ever read.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .config import InversionConfig, StepTracker
from .losses import ReconstructionLoss, saturation_matched
from .projection import lr_schedule, sample_ws, stage_progress, synthesize


def private_copy(G: torch.nn.Module, noise_bufs: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A deep copy of `G` whose constant-noise buffers hold `noise_bufs`, frozen and in eval mode."""
    G_copy = copy.deepcopy(G).eval().requires_grad_(False)
    with torch.no_grad():
        for name, tensor in noise_bufs.items():
            G_copy.synthesis.get_buffer(name).copy_(tensor)
    return G_copy


def _locality_latents(G: torch.nn.Module, ws: torch.Tensor, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """A latent `alpha` away from the pivot `ws`, towards a random mapping sample (PTI's latent ball)."""
    w_z = sample_ws(G, 1, generator, ws.device)
    direction = w_z - ws
    return ws + alpha * direction / direction.norm()


def tune_generator(G: torch.nn.Module, ws: torch.Tensor, noise_bufs: dict[str, torch.Tensor], target: torch.Tensor,
                   loss: ReconstructionLoss, config: InversionConfig, tracker: StepTracker) -> torch.nn.Module:
    """Fine-tune a deep copy of `G` so that `ws` (with `noise_bufs`) renders `target`; returns the copy.

    `G` itself is never modified. The loss is the reconstruction loss plus `pti_l2_weight` × pixel MSE, and
    with `locality_weight > 0` the same loss between the tuned and original outputs at sampled latents. The
    learning rate follows the projection's cosine ramp up and down: the ramp up keeps Adam's first, sign-sized
    steps from jolting every weight at once, the ramp down lets the fit settle.
    """
    assert ws.ndim == 3 and ws.shape[1:] == (G.num_ws, G.w_dim), f"ws must be [1, num_ws, w_dim], got {tuple(ws.shape)}"
    G_tuned = private_copy(G, noise_bufs)
    if config.pti_steps == 0:
        return G_tuned
    params = [p for p in G_tuned.synthesis.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.pti_lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    ws = ws.detach()
    for step in range(config.pti_steps):
        tracker.check_cancel()
        for group in opt.param_groups:
            group["lr"] = config.pti_lr * lr_schedule(stage_progress(step, config.pti_steps), config.lr_rampup,
                                                      config.lr_rampdown)
        synth = G_tuned.synthesis(ws, noise_mode="const")
        rec = loss(synth, target)
        total = rec + config.pti_l2_weight * F.mse_loss(saturation_matched(synth, target), target)
        if config.locality_weight > 0 and step % config.locality_every == 0:
            with torch.no_grad():
                w_local = _locality_latents(G, ws, config.locality_alpha, generator)
                reference = synthesize(G, w_local, noise_bufs)
            out = G_tuned.synthesis(w_local, noise_mode="const")
            local = loss(out, reference) + config.pti_l2_weight * F.mse_loss(out, reference)
            total = total + config.locality_weight * local
        grads = torch.autograd.grad(total, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        tracker.record("pti", float(rec.detach()), synth, last_of_stage=step == config.pti_steps - 1)
    opt.zero_grad(set_to_none=True)
    return G_tuned.requires_grad_(False)
