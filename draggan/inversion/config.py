"""Settings, progress events and step bookkeeping shared by the projection and pivotal-tuning stages."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InversionCancelled
from ..images import to_uint8

# LPIPS-VGG16 weights on the Hugging Face Hub, pinned to the commits that added the files.
# Backbone: torchvision's ImageNet VGG16 weights as republished by timm (BSD-3-Clause); only `features.*` is used.
VGG16_REPO = "timm/vgg16.tv_in1k"
VGG16_FILE = "model.safetensors"
VGG16_REVISION = "3394518cba29aee1ea82a49d971be90d2dd1dab7"
# Linear heads: LPIPS v0.1 'vgg' (Zhang et al., BSD-2-Clause), the same file as PerceptualSimilarity's
# lpips/weights/v0.1/vgg.pth (sha256 a78928a0…), mirrored by the IQA-PyTorch project.
LPIPS_REPO = "chaofengc/IQA-PyTorch-Weights"
LPIPS_FILE = "LPIPS_v0.1_vgg-a78928a0.pth"
LPIPS_REVISION = "e03d58097b4b231515f900fa8006a2168becc745"

LOSS_CHOICES = ("auto", "lpips", "pixel")


@dataclasses.dataclass
class InversionConfig:
    """Every knob of `invert()`. Defaults follow NVIDIA's StyleGAN2-ADA projector and the PTI paper."""

    # Projection (optimisation of the latent): first a single w broadcast to all layers, then per-layer W+.
    w_steps: int = 400
    wplus_steps: int = 200
    lr: float = 0.1                       # peak Adam learning rate of the W stage
    wplus_lr: float = 0.01                # peak learning rate of the W+ stage (starts at the W optimum)
    lr_rampup: float = 0.05               # fraction of a stage spent ramping the learning rate up (cosine)
    lr_rampdown: float = 0.25             # fraction of a stage spent ramping it down to zero
    initial_noise_factor: float = 0.05    # latent noise at the start of the W stage, in units of w's std
    noise_ramp_length: float = 0.75       # fraction of the W stage after which the latent noise is gone
    optimize_noise: bool = True           # also fit the per-layer noise maps (StyleGAN2 only)
    noise_reg_weight: float = 1e5         # keeps optimised noise maps spatially uncorrelated
    w_avg_samples: int = 10000            # mapping samples used for the start point and w's spread
    project_size: int = 0                 # > 0: project against the generator's image at the smallest size it
                                          # can stop at that is >= this (the target area-downsampled to it),
                                          # skipping the blocks above; 0: at full size
    project_bf16: bool = False            # project in bfloat16 (autocast: synthesis and loss; the tuning stays
                                          # float32) where the CPU runs bfloat16 convolutions natively or
                                          # emulated on AVX-512 and the model is a StyleGAN2: ~35 % cheaper
                                          # steps there; float32 elsewhere (`projection.projection_dtype`)
    # Pivotal tuning (fine-tuning a private copy of the generator around the pivot latent).
    pti_steps: int = 300
    pti_lr: float = 3e-4
    pti_l2_weight: float = 1.0            # pixel MSE term, added to the reconstruction loss
    locality_weight: float = 0.0          # > 0 enables PTI's locality regulariser
    locality_alpha: float = 30.0          # distance from the pivot of the latents it samples
    locality_every: int = 1               # apply it every this many steps
    # Reconstruction loss: 'auto' = LPIPS when its weights can be had, else the pixel fallback.
    loss: str = "auto"
    vgg16_repo: str = VGG16_REPO
    vgg16_file: str = VGG16_FILE
    vgg16_revision: str | None = VGG16_REVISION
    lpips_repo: str = LPIPS_REPO
    lpips_file: str = LPIPS_FILE
    lpips_revision: str | None = LPIPS_REVISION
    loss_max_size: int = 256              # LPIPS sees images area-downsampled to at most this side
    # Input.
    face_align: bool = False              # FFHQ-style face crop first (needs dlib; see `align`)
    # Reporting.
    log_every: int = 10                   # history: mean reconstruction loss of each window of this many steps
    preview_every: int = 25               # progress events carry a preview image every this many steps
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("w_steps", "wplus_steps", "pti_steps", "w_avg_samples", "project_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("log_every", "preview_every", "locality_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_rampup", "lr_rampdown"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a fraction of a stage, in [0, 1]; got {getattr(self, name)}")
        if self.noise_ramp_length <= 0:
            raise ValueError(f"noise_ramp_length must be > 0, got {self.noise_ramp_length}")
        if self.w_avg_samples < 2:
            raise ValueError("w_avg_samples must be at least 2")
        if self.loss not in LOSS_CHOICES:
            raise ValueError(f"loss must be one of {LOSS_CHOICES}, got {self.loss!r}")

    @property
    def total_steps(self) -> int:
        return self.w_steps + self.wplus_steps + self.pti_steps


@dataclasses.dataclass
class InversionProgress:
    """One optimisation step, as reported to the `progress` callback."""

    stage: str                            # 'w', 'w+' or 'pti'
    step: int                             # 1-based, counted over all stages
    total_steps: int
    loss: float                           # reconstruction loss of this step (before its update)
    preview: np.ndarray | None            # uint8 [H, W, 3] every `preview_every` steps and at each stage's end


class StepTracker:
    """Counts steps over all stages, logs the windowed loss, reports progress and honours cancellation."""

    def __init__(self, total_steps: int, log_every: int, preview_every: int,
                 progress: Callable[[InversionProgress], None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.total_steps = total_steps
        self.log_every = log_every
        self.preview_every = preview_every
        self.progress = progress
        self.cancel = cancel
        self.step = 0
        self.history: list[tuple[int, float]] = []
        self._window: list[float] = []

    def check_cancel(self) -> None:
        """Call before each step: raises `InversionCancelled` once the cancel event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise InversionCancelled(self.step)

    def record(self, stage: str, loss: float, image: torch.Tensor, last_of_stage: bool) -> None:
        """Book one finished step whose reconstruction loss was `loss` and whose output was `image`."""
        self.step += 1
        self._window.append(loss)
        if len(self._window) == self.log_every:
            self.history.append((self.step, float(np.mean(self._window))))
            self._window = []
        if self.progress is not None:
            want_preview = last_of_stage or self.step % self.preview_every == 0
            preview = to_uint8(image) if want_preview else None
            self.progress(InversionProgress(stage=stage, step=self.step, total_steps=self.total_steps,
                                            loss=loss, preview=preview))
