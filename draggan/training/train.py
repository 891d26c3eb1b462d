"""Train our StyleGAN2 generator on the procedural cartoon-face world, by renderer supervision.

Adversarial training of a small GAN on 2 CPU cores needs hundreds of thousands of images before eyes
appear. Here the world's renderer is the teacher instead: each latent z decides the face parameters
through the fixed map `procedural.params_from_z`, and the generator is regressed onto the rendered face
with a pixel + multi-scale + image-gradient loss, weighted up around the eyes, nose and mouth (the small
features a plain pixel loss leaves faint). The result is a normal StyleGAN2 generator — mapping network,
W / W+, truncation around a `w_avg` tracked as an EMA of the mapping's output — so DragGAN runs on it
unchanged, and the exported safetensors + config load through the converted-model path.

Runs are resumable: `<run_dir>/checkpoint.pt` is rewritten atomically every few minutes and picked up
by the next invocation with the same run_dir; sample grids go to `<run_dir>/samples/`. A new run can start
from an exported generator (`init_from`): the same architecture continues it, one of half the run's
resolution is grown (`grow_state`), and `train_top_blocks` then trains only the new top block(s).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..checkpoints.loader import load_converted, read_config, save_converted
from ..data import procedural
from ..networks.stylegan2 import Generator
from .loop import Periodic, run_loop, save_checkpoint

CHECKPOINT_FILE = "checkpoint.pt"
_ARCHITECTURE_KEYS = ("resolution", "w_dim", "mapping_layers", "mapping_lr_mul", "channel_base", "channel_max")
_FEATURE_KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_top", "mouth_bottom", "mouth_left", "mouth_right")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; stored in its checkpoint so a resumed run keeps the same setup."""

    run_dir: str = "runs/cartoon-faces-64"
    resolution: int = 64
    w_dim: int = 128
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.1
    channel_base: int = 2048
    channel_max: int = 128
    batch: int = 16
    lr: float = 2e-3
    total_kimg: float = 1000.0
    ema_kimg: float = 2.0
    w_avg_beta: float = 0.995
    feature_weight: float = 4.0
    grad_weight: float = 1.0
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    init_from: str = ""          # an exported generator to start from: this architecture, or half this resolution
                                 # (grown: its blocks start every block below the new top one, see `grow_state`)
    train_top_blocks: int = 0    # train only the top k synthesis blocks, the rest frozen (0: every parameter)
    checkpoint_minutes: float = 5.0
    sample_minutes: float = 5.0
    log_seconds: float = 60.0


def make_generator(cfg: TrainConfig) -> Generator:
    """The small StyleGAN2 generator of a run: z has one coordinate per procedural parameter."""
    return Generator(z_dim=procedural.NUM_PARAMS, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                     img_channels=3,
                     mapping_kwargs=dict(num_layers=cfg.mapping_layers, lr_multiplier=cfg.mapping_lr_mul,
                                         w_avg_beta=cfg.w_avg_beta),
                     synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max))


def grow_state(small: Generator, large: Generator) -> dict[str, torch.Tensor]:
    """`large`'s state dict with every tensor `small` has copied from it, for a `large` of twice `small`'s
    resolution and otherwise the same architecture; the new top block's ToRGB starts at zero, so the grown
    generator draws exactly `small`'s image, FIR-upsampled, and its training only has to add the detail.

    Exact because the synthesis blocks up to `small`'s resolution have the same channels in both (set by
    channel_base / resolution), the mapping does not depend on the number of ws, and in the 'skip'
    architecture the image is the upsampled sum of every block's ToRGB output."""
    small_kwargs, large_kwargs = dict(small.init_kwargs), dict(large.init_kwargs)
    if large_kwargs.pop("img_resolution") != 2 * small_kwargs.pop("img_resolution") or small_kwargs != large_kwargs:
        raise ValueError(f"can only grow a generator to twice its resolution with the same architecture: "
                         f"{small.init_kwargs} vs {large.init_kwargs}")
    state = large.state_dict()
    for name, tensor in small.state_dict().items():
        if name not in state or state[name].shape != tensor.shape:
            raise ValueError(f"grown generator has no tensor {name} of shape {tuple(tensor.shape)}")
        state[name] = tensor.detach().clone()
    top = f"synthesis.b{large.img_resolution}.torgb"
    state[f"{top}.weight"] = torch.zeros_like(state[f"{top}.weight"])
    state[f"{top}.bias"] = torch.zeros_like(state[f"{top}.bias"])
    return state


def trainable_parameters(G: Generator, top_blocks: int) -> list[torch.nn.Parameter]:
    """The parameters a run trains: all of them (top_blocks 0) or the top `top_blocks` synthesis blocks'."""
    blocks = G.synthesis.block_resolutions
    if not 0 <= top_blocks <= len(blocks):
        raise ValueError(f"train_top_blocks must be in [0, {len(blocks)}], got {top_blocks}")
    if top_blocks == 0:
        return list(G.parameters())
    prefixes = tuple(f"synthesis.b{res}." for res in blocks[-top_blocks:])
    return [p for name, p in G.named_parameters() if name.startswith(prefixes)]


def feature_weight_map(keypoints: torch.Tensor, resolution: int, strength: float) -> torch.Tensor:
    """Per-pixel loss weight [N, 1, R, R]: 1 plus Gaussian bumps at the face's small features."""
    idx = [procedural.KEYPOINT_NAMES.index(k) for k in _FEATURE_KEYPOINTS]
    pts = keypoints[:, idx]
    coords = torch.arange(resolution, dtype=torch.float32, device=keypoints.device)
    sigma = 0.06 * resolution
    gx = (-(coords[None, None, :] - pts[..., 0:1]).square() / (2 * sigma ** 2)).exp()
    gy = (-(coords[None, None, :] - pts[..., 1:2]).square() / (2 * sigma ** 2)).exp()
    bumps = torch.einsum("nky,nkx->nyx", gy, gx).clamp(max=1.0)
    return 1 + strength * bumps[:, None]


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                        grad_weight: float) -> torch.Tensor:
    """Weighted L1 at full, 1/2, 1/4 and 1/8 resolution plus weighted L1 on horizontal/vertical differences.

    The coarse terms settle layout and colour fast; the difference term rewards sharp edges of small features.
    """
    assert pred.shape == target.shape and pred.ndim == 4
    loss = ((pred - target).abs() * weight).mean()
    p, t, w = pred, target, weight
    for _ in range(3):
        p, t, w = F.avg_pool2d(p, 2), F.avg_pool2d(t, 2), F.avg_pool2d(w, 2)
        loss = loss + ((p - t).abs() * w).mean()
    if grad_weight > 0:
        dx = (pred.diff(dim=3) - target.diff(dim=3)).abs() * weight[..., :, 1:]
        dy = (pred.diff(dim=2) - target.diff(dim=2)).abs() * weight[..., 1:, :]
        loss = loss + grad_weight * (dx.mean() + dy.mean())
    return loss


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return ((img.detach().permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu().numpy()


def sample_grid(G: torch.nn.Module, z: torch.Tensor, resolution: int, cols: int = 8) -> np.ndarray:
    """Grid image: rows alternate the renderer's target faces and the generator's faces for the same z."""
    with torch.no_grad():
        fake = G(z, None, noise_mode="const")
        real, _ = procedural.render_z(z, resolution)
    fake, real = _to_uint8(fake), _to_uint8(real)
    rows = []
    for i in range(0, z.shape[0], cols):
        rows.append(np.concatenate(list(real[i:i + cols]), axis=1))
        rows.append(np.concatenate(list(fake[i:i + cols]), axis=1))
    return np.concatenate(rows, axis=0)


def export_generator(G: torch.nn.Module, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write G as a converted-model folder (`model.safetensors` + `config.json`) and check it loads back."""
    out_dir = Path(out_dir)
    save_converted(G, out_dir, meta)
    load_converted(out_dir)
    return out_dir


class Trainer:
    """One renderer-supervised run: generator, its EMA copy, optimiser and progress, resumable from run_dir."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.G = make_generator(cfg).train().requires_grad_(False).to(self.device)
        trained = trainable_parameters(self.G, cfg.train_top_blocks)
        for p in trained:
            p.requires_grad_(True)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(trained, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8)
        self.step = 0
        self.images_seen = 0
        self.grid_z = procedural.sample_z(32, seed=123456).to(self.device)
        path = self.run_dir / CHECKPOINT_FILE
        if path.is_file():
            self._load(path)
        elif cfg.init_from:
            self._init_from(Path(cfg.init_from))

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        saved = state["config"]
        saved.setdefault("train_top_blocks", 0)            # checkpoints from before the option trained everything
        for key in _ARCHITECTURE_KEYS + ("train_top_blocks",):
            if saved[key] != getattr(self.cfg, key):
                raise ValueError(f"{path}: run was started with {key}={saved[key]!r}, not {getattr(self.cfg, key)!r}")
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt.load_state_dict(state["opt"])
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr
        self.step = state["step"]
        self.images_seen = state["images_seen"]

    def _init_from(self, folder: Path) -> None:
        """Start a new run from an exported generator (e.g. the bundled checkpoint): G and G_ema both take its
        weights and `images_seen` its recorded kimg, so a fresh machine continues rather than restarts; one of
        half this run's resolution is grown (`grow_state`) and the count starts at 0."""
        G = load_converted(folder)
        if G.init_kwargs.get("img_resolution") * 2 == self.G.img_resolution:
            state = grow_state(G, self.G)
            self.images_seen = 0
        elif G.init_kwargs != self.G.init_kwargs:
            raise ValueError(f"{folder}: generator architecture {G.init_kwargs} differs from this run's "
                             f"{self.G.init_kwargs} (and is not of half its resolution)")
        else:
            state = G.state_dict()
            self.images_seen = int(float(read_config(folder).get("kimg", 0)) * 1000)
        self.G.load_state_dict(state)
        self.G_ema.load_state_dict(state)

    def save_checkpoint(self) -> Path:
        """Atomically rewrite `<run_dir>/checkpoint.pt` with everything needed to resume."""
        return save_checkpoint(dict(config=dataclasses.asdict(self.cfg), G=self.G.state_dict(),
                                    G_ema=self.G_ema.state_dict(), opt=self.opt.state_dict(), step=self.step,
                                    images_seen=self.images_seen), self.run_dir / CHECKPOINT_FILE)

    def save_samples(self) -> Path:
        """Write the sample grid for the current EMA generator as PNG (also as `latest.png`)."""
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        grid = Image.fromarray(sample_grid(self.G_ema, self.grid_z, self.cfg.resolution))
        path = out / f"grid-{self.images_seen // 1000:06d}k.png"
        grid.save(path)
        grid.save(out / "latest.png")
        return path

    def train_step(self) -> float:
        """One optimiser step on a fresh batch of rendered faces; returns the loss."""
        cfg = self.cfg
        z = procedural.sample_z(cfg.batch, seed=cfg.seed * 1_000_003 + self.step).to(self.device)
        with torch.no_grad():
            target, keypoints = procedural.render_z(z, cfg.resolution)
            weight = feature_weight_map(keypoints, cfg.resolution, cfg.feature_weight)
        ws = self.G.mapping(z, None, update_emas=True)   # the mapping keeps its w_avg EMA
        pred = self.G.synthesis(ws, noise_mode="random")
        loss = reconstruction_loss(pred, target, weight, cfg.grad_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            ema_images = cfg.ema_kimg * 1000 * min(1.0, (self.images_seen + cfg.batch) / (cfg.ema_kimg * 1000 * 5))
            beta = 0.5 ** (cfg.batch / max(ema_images, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self.step += 1
        self.images_seen += cfg.batch
        return float(loss.detach())

    def run(self, max_seconds: float | None = None) -> None:
        """Train until `total_kimg` (or `max_seconds`), checkpointing and writing grids on the way.

        SIGTERM ends the run after the current step with a checkpoint, so `kill <pid>` loses nothing.
        """
        cfg = self.cfg
        total = int(cfg.total_kimg * 1000)
        if self.images_seen == 0:
            self.save_samples()
        log = dict(time=time.time(), images=self.images_seen, loss=0.0, steps=0)

        def step() -> None:
            log["loss"] += self.train_step()
            log["steps"] += 1

        def report() -> None:
            now = time.time()
            rate = (self.images_seen - log["images"]) / max(now - log["time"], 1e-9)
            print(f"step {self.step} kimg {self.images_seen / 1000:.1f} loss {log['loss'] / log['steps']:.4f} "
                  f"img/s {rate:.1f} w_avg_norm {float(self.G.mapping.w_avg.norm()):.2f}", flush=True)
            log.update(time=now, images=self.images_seen, loss=0.0, steps=0)

        run_loop(step, lambda: self.images_seen >= total,
                 [Periodic(cfg.log_seconds, report), Periodic(cfg.sample_minutes * 60, self.save_samples),
                  Periodic(cfg.checkpoint_minutes * 60, self.save_checkpoint)], max_seconds)
        self.save_checkpoint()
        self.save_samples()

    def export(self, out_dir: str | Path) -> Path:
        """Export the EMA generator as a converted-model folder with the run's provenance, plus `samples.png`
        (rows alternate the renderer's faces and the generator's faces for the same 32 latents)."""
        meta = dict(source="draggan.training.train (renderer-supervised on draggan.data.procedural cartoon faces)",
                    world="procedural-cartoon-faces", kimg=round(self.images_seen / 1000, 1),
                    keypoints=list(procedural.KEYPOINT_NAMES))
        out = export_generator(self.G_ema, out_dir, meta)
        Image.fromarray(sample_grid(self.G_ema, self.grid_z, self.cfg.resolution)).save(out / "samples.png")
        return out


def count_params(G: torch.nn.Module) -> int:
    """Number of trainable parameters (buffers excluded)."""
    return sum(p.numel() for p in G.parameters())


def train(cfg: TrainConfig, max_seconds: float | None = None, export_dir: str | None = None) -> Trainer:
    """Run (or resume) training; optionally export the EMA generator afterwards."""
    torch.set_num_threads(cfg.threads)
    if torch.device(cfg.device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    trainer = Trainer(cfg)
    print(f"run {cfg.run_dir}: G has {count_params(trainer.G) / 1e6:.2f} M params, resuming at "
          f"{trainer.images_seen / 1000:.1f} kimg", flush=True)
    trainer.run(max_seconds=max_seconds)
    if export_dir is not None:
        trainer.export(export_dir)
    return trainer

