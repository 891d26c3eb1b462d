"""A small keypoint regressor for the procedural cartoon-face world, used only as the drag-quality judge.

The network is a little U-Net that predicts one heatmap per keypoint at half the input resolution and
reads each keypoint off its heatmap with a soft-argmax, so coordinates are continuous and the model is
trained end to end with an L1 loss in pixels. Training images are rendered on the fly with their exact
keypoints, then blurred, noised and colour-jittered so the judge also reads a generator's softer faces.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoints.model_folder import load_model_folder, save_model_folder
from ..data import procedural
from .loop import Periodic, run_loop, save_checkpoint

FORMAT_VERSION = 1
KIND = "keypoint-regressor"


def _conv(cin: int, cout: int, stride: int = 1) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                               torch.nn.LeakyReLU(0.2))


class KeypointNet(torch.nn.Module):
    """Image [N, 3, R, R] in [-1, 1] → keypoints [N, num_keypoints, 2] as (x, y) pixels of that image."""

    def __init__(self, num_keypoints: int, resolution: int = 64, channels: int = 32) -> None:
        super().__init__()
        assert resolution % 8 == 0
        self.init_kwargs = dict(num_keypoints=num_keypoints, resolution=resolution, channels=channels)
        self.num_keypoints = num_keypoints
        self.resolution = resolution
        c = channels
        self.enc1 = torch.nn.Sequential(_conv(3, c, 2), _conv(c, c))                # R/2
        self.enc2 = torch.nn.Sequential(_conv(c, 2 * c, 2), _conv(2 * c, 2 * c))    # R/4
        self.enc3 = torch.nn.Sequential(_conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c))  # R/8
        self.dec2 = _conv(4 * c + 2 * c, 2 * c)
        self.dec1 = _conv(2 * c + c, c)
        self.head = torch.nn.Conv2d(c, num_keypoints, 1)
        self.log_temperature = torch.nn.Parameter(torch.zeros([]))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        assert img.ndim == 4 and img.shape[1] == 3, f"expected [N, 3, H, W], got {tuple(img.shape)}"
        height, width = img.shape[2], img.shape[3]
        x = img.to(torch.float32)
        if (height, width) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        f1 = self.enc1(x)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        y = self.dec2(torch.cat([F.interpolate(f3, scale_factor=2, mode="nearest"), f2], dim=1))
        y = self.dec1(torch.cat([F.interpolate(y, scale_factor=2, mode="nearest"), f1], dim=1))
        heat = self.head(y) * self.log_temperature.exp()
        n, k, h, w = heat.shape
        prob = heat.flatten(2).softmax(dim=2).reshape(n, k, h, w)
        # Heatmap cell j covers input pixels [2j, 2j + 1]: its centre is at 2j + 0.5 in pixel coordinates.
        cell = self.resolution // h
        xs = torch.arange(w, dtype=torch.float32, device=img.device) * cell + (cell - 1) / 2
        ys = torch.arange(h, dtype=torch.float32, device=img.device) * cell + (cell - 1) / 2
        px = (prob.sum(dim=2) * xs).sum(dim=2)
        py = (prob.sum(dim=3) * ys).sum(dim=2)
        pts = torch.stack([px, py], dim=-1)
        scale = torch.tensor([width / self.resolution, height / self.resolution], device=img.device)
        return (pts + 0.5) * scale - 0.5


def augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise and colour jitter (per image) so the judge tolerates generated, slightly soft images.

    All random draws come from `gen`, on its device, which must be the device of `img`.
    """
    n, dev = img.shape[0], gen.device
    assert img.device.type == dev.type, f"img on {img.device}, generator on {dev}"
    sigma = torch.rand([n], generator=gen, device=dev) * 1.2
    taps = torch.arange(-2, 3, dtype=torch.float32, device=dev)
    kernel = (-(taps[None] ** 2) / (2 * sigma[:, None].clamp_min(0.05) ** 2)).exp()
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    x = img.permute(1, 0, 2, 3)
    x = F.conv2d(F.pad(x, [2, 2, 0, 0], mode="replicate"), kernel[:, None, None, :], groups=n)
    x = F.conv2d(F.pad(x, [0, 0, 2, 2], mode="replicate"), kernel[:, None, :, None], groups=n)
    x = x.permute(1, 0, 2, 3)
    gain = 1 + 0.15 * (torch.rand([n, 3, 1, 1], generator=gen, device=dev) * 2 - 1)
    bias = 0.1 * (torch.rand([n, 3, 1, 1], generator=gen, device=dev) * 2 - 1)
    noise = torch.randn(x.shape, generator=gen, device=dev) * torch.rand([n, 1, 1, 1], generator=gen, device=dev) * 0.06
    return (x * gain + bias + noise).clamp(-1, 1)


@dataclasses.dataclass
class KeypointTrainConfig:
    """One keypoint-regressor run; resumable from `<run_dir>/checkpoint.pt`."""

    run_dir: str = "runs/cartoon-faces-keypoints-64"
    resolution: int = 64
    channels: int = 32
    batch: int = 32
    lr: float = 2e-3
    total_kimg: float = 200.0
    seed: int = 1
    threads: int = 1
    device: str = "cpu"
    checkpoint_minutes: float = 5.0
    log_seconds: float = 60.0


def save_regressor(net: KeypointNet, out_dir: str | Path, meta: dict | None = None) -> Path:
    """Write the regressor as a model folder (`model.safetensors` + `config.json`) in `out_dir`."""
    config = dict(format_version=FORMAT_VERSION, kind=KIND, init_kwargs=net.init_kwargs,
                  keypoints=list(procedural.KEYPOINT_NAMES))
    save_model_folder(out_dir, net, config, meta)
    return Path(out_dir)


def load_regressor(path: str | Path) -> KeypointNet:
    """Load a regressor folder written by `save_regressor` (eval mode, no grads)."""
    path = Path(path)
    state, config = load_model_folder(path)
    if config.get("format_version") != FORMAT_VERSION or config.get("kind") != KIND:
        raise ValueError(f"{path}: not a format_version {FORMAT_VERSION} {KIND}")
    if list(config["keypoints"]) != list(procedural.KEYPOINT_NAMES):
        raise ValueError(f"{path}: keypoint names differ from draggan.data.procedural.KEYPOINT_NAMES")
    net = KeypointNet(**config["init_kwargs"])
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def evaluate(net: KeypointNet, n: int = 256, seed: int = 999, resolution: int = 64) -> float:
    """Mean keypoint error in pixels on n clean procedural faces (held-out seed)."""
    _, img, kp = procedural.render_seeds(seed, n, resolution=resolution)
    with torch.no_grad():
        pred = net(img)
    return float((pred - kp).norm(dim=-1).mean())


def train_regressor(cfg: KeypointTrainConfig, max_seconds: float | None = None,
                    export_dir: str | None = None) -> KeypointNet:
    """Train (or resume) the regressor on freshly rendered, augmented faces; optionally export it.

    SIGTERM ends the run after the current step with a checkpoint (and the export, if asked for).
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.run_dir)
    device = torch.device(cfg.device)
    net = KeypointNet(procedural.NUM_KEYPOINTS, resolution=cfg.resolution, channels=cfg.channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    progress = dict(step=0, images=0, loss=0.0, steps=0)
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        progress.update(step=state["step"], images=state["images_seen"])
    total = int(cfg.total_kimg * 1000)

    def step() -> None:
        seed = cfg.seed * 1_000_003 + progress["step"]
        z = torch.randn([cfg.batch, procedural.NUM_PARAMS], generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            img, kp = procedural.render_z(z.to(device), cfg.resolution)
            img = augment(img, torch.Generator(device=device).manual_seed(seed))
        lr = cfg.lr * min(1.0, 2 * (1 - progress["images"] / total)) if total > 0 else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        loss = (net(img) - kp).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress["step"] += 1
        progress["images"] += cfg.batch
        progress["loss"] += float(loss.detach())
        progress["steps"] += 1

    def report() -> None:
        print(f"keypoints step {progress['step']} kimg {progress['images'] / 1000:.1f} "
              f"L1 px {progress['loss'] / progress['steps']:.3f}", flush=True)
        progress.update(loss=0.0, steps=0)

    def save() -> None:
        save_checkpoint(dict(config=dataclasses.asdict(cfg), net=net.state_dict(), opt=opt.state_dict(),
                             step=progress["step"], images_seen=progress["images"]), ckpt)

    run_loop(step, lambda: progress["images"] >= total,
             [Periodic(cfg.log_seconds, report), Periodic(cfg.checkpoint_minutes * 60, save)], max_seconds)
    save()
    net.eval().cpu()
    if export_dir is not None:
        err = evaluate(net, resolution=cfg.resolution)
        print(f"keypoints: mean error on held-out clean faces {err:.3f} px", flush=True)
        save_regressor(net, export_dir, meta=dict(kimg=round(progress["images"] / 1000, 1),
                                                  heldout_error_px=round(err, 3)))
    return net
