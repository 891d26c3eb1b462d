"""A per-user drag session: DragGAN's optimisation loop with stop/resume and undo/redo.

One `DragSession` owns its latent, optimiser, points, mask and history; the generator is only read
(never modified, no parameter gradients), so many sessions can share one generator and run in parallel
threads. Public points are (x, y) image pixels; internally they are (row, col) = (y, x).

Per step (official XingangPan/DragGAN `viz/renderer.py` semantics): synthesise the feature block from the
current latent, track every handle to its best match of the first step's reference feature within a
window of round(r2·H/512) pixels, stop if every handle is within max(2·H/512, 2) pixels of its target,
otherwise take one Adam step on the motion-supervision loss (+ λ × the masked L1 to the first step's
features). Only the first `num_layers` (6) style layers are optimised — per layer in W+, one shared vector
in W — and the others stay at the start latent.
`DragConfig.tracker` picks the tracking step (`trackers.py`); the default, "official", is the one above.

Where we do less work than the original: a step runs the synthesis only up to the feature block, with
unfused modulated convolutions (style gradients without per-sample weight gradients); without a mask it
computes the StyleGAN2 blocks above the lowest whole-map block only on the window the step reads
(`window.py`); it reads the upsampled feature map sparsely (`features.py`); and it renders the image only
when asked.

Radii are at least 1 px: below 86-pixel-high images the official rounding gives r1 = 0 (no supervised
pixel at all).

StyleGAN3 feature layers carry a margin outside the image; we drop it before upsampling so that feature
pixels line up with image pixels (the official code upsamples the margin too, which shifts features near
the image border by up to margin × H / size pixels).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from ..images import to_uint8
from .features import UpsampledView, masked_l1
from .motion import motion_loss, official_grid, plan_motion
from .trackers import TRACKER_NAMES, make_tracker
from .tracking import reference_features
from .window import Box, WindowedSynthesis

Point = tuple[float, float]
SPACES = ("w", "w+")


@dataclass
class DragConfig:
    """Drag hyper-parameters; radii are in pixels of a 512-pixel-high image and scale with H/512."""

    space: str = "w+"                 # "w+" (per-layer codes) or "w" (one shared code)
    lr: float = 1e-3                  # Adam step size (the paper uses 2e-3 on FFHQ / AFHQ-cat / car)
    r1: float = 3.0                   # motion-supervision radius
    r2: float = 12.0                  # point-tracking search half-size
    mask_lambda: float = 20.0         # weight of the fixed-region term
    feature_block: int | None = None  # synthesis block (StyleGAN3: layer) read as features; None = default
    max_steps: int = 300              # guard for one `run()`
    num_layers: int = 6               # style layers optimised; the rest stay at the start latent
    noise_mode: str = "const"
    windowed: bool = True             # StyleGAN2 without mask: compute the feature block only near the handles
    tracker: str = "official"         # point tracker, one of trackers.TRACKER_NAMES ("official", "freedrag")

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not (self.r1 > 0 and self.r2 > 0):
            raise ValueError(f"r1 and r2 must be positive, got {self.r1}, {self.r2}")
        if self.max_steps < 0 or self.num_layers < 1:
            raise ValueError("max_steps must be ≥ 0 and num_layers ≥ 1")
        if self.tracker not in TRACKER_NAMES:
            raise ValueError(f"tracker must be one of {TRACKER_NAMES}, got {self.tracker!r}")


@dataclass
class StepResult:
    """What one optimisation step did. Points are (x, y) pixels; `image` is set only when rendered."""

    step: int                  # steps taken in the current drag, this one included
    handles: list[Point]       # tracked handle positions
    targets: list[Point]
    distances: list[float]     # handle → target, pixels
    done: bool                 # every handle arrived (no optimiser step was taken)
    loss: float                # total loss of this step (0 when done)
    seconds: float
    loss_motion: float = 0.0
    loss_mask: float = 0.0
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Snapshot:
    """One undo/redo entry: the optimised latent and the points drawn on it."""

    w: torch.Tensor
    handles: tuple[Point, ...]
    targets: tuple[Point, ...]


class _Drag:
    """State that lives for one drag and survives stop/resume: references, tracked handles, optimiser."""

    def __init__(self, w: torch.Tensor, lr: float, handles: list[Point]) -> None:
        self.optimizer = torch.optim.Adam([w], lr=lr)
        self.w_begin = w.detach().clone()        # latent of the first step, whose map is F0
        self.feat0: torch.Tensor | None = None   # [C, h, w] F0, computed when a mask term needs it
        self.ref: torch.Tensor | None = None     # [N, C] handle features in F0
        self.tracker = None                      # trackers.Tracker, made at the first step
        self.points_rc = torch.tensor([[round(y), round(x)] for x, y in handles], dtype=torch.int64)  # CPU
        self.steps = 0


def default_feature_block(G: torch.nn.Module) -> int:
    """Index of the synthesis block/layer whose output DragGAN reads.

    StyleGAN2: block 5 (128×128 in a 512 model, as the official code), or the last block below full
    resolution for models with fewer blocks. StyleGAN3: the network module's own choice
    (`stylegan3.default_feature_layer`) when it provides one, else the deepest layer whose size is
    closest to a quarter of the image height.
    """
    shapes = G.synthesis.feature_shapes()
    if getattr(G, "family", "stylegan2") == "stylegan3":
        from ..networks import stylegan3
        chooser = getattr(stylegan3, "default_feature_layer", None)
        if chooser is not None:
            return int(chooser(G))
        goal = G.img_height / 4
        scores = [abs(math.log(h / goal)) for _, h, _ in shapes]
        best = min(scores)
        return max(i for i, s in enumerate(scores) if s <= best + 1e-9)
    if len(shapes) >= 6:
        return 5
    return max(len(shapes) - 2, 0)


def _as_points(points: Sequence[Sequence[float]], name: str) -> list[Point]:
    out = []
    for p in points:
        if len(p) != 2:
            raise ValueError(f"{name}: every point must be (x, y), got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return out


class DragSession:
    """Drag handle points to targets on one generator by optimising the latent (see module docstring)."""

    def __init__(self, G: torch.nn.Module, seed: int = 0, psi: float = 0.7, w: torch.Tensor | np.ndarray | None = None,
                 config: DragConfig | None = None) -> None:
        self.G = G
        self.config = dataclasses.replace(config) if config is not None else DragConfig()
        cfg = self.config
        self.family = getattr(G, "family", "stylegan2")
        self.height = int(G.img_height)
        self.width = int(G.img_width)
        self.num_ws = int(G.num_ws)
        self.w_dim = int(G.w_dim)
        tensors = list(G.parameters()) + list(G.buffers())
        self.device = tensors[0].device if tensors else torch.device("cpu")

        num_blocks = len(G.synthesis.feature_shapes())
        self.feature_block = default_feature_block(G) if cfg.feature_block is None else int(cfg.feature_block)
        if not 0 <= self.feature_block < num_blocks:
            raise ValueError(f"feature_block must be in [0, {num_blocks}), got {self.feature_block}")
        channels, feat_h, feat_w = G.synthesis.feature_shapes()[self.feature_block]
        self._margin = 0
        if hasattr(G.synthesis, "feature_margins"):
            self._margin = int(G.synthesis.feature_margins()[self.feature_block])
            feat_h, feat_w = feat_h - 2 * self._margin, feat_w - 2 * self._margin
        self.feature_shape = (int(channels), int(feat_h), int(feat_w))
        self._view = UpsampledView.create((feat_h, feat_w), (self.height, self.width), self.device)
        self._grid = official_grid(self.height, self.width)
        self._windowed = None
        if cfg.windowed and self.family == "stylegan2" and cfg.noise_mode in ("const", "none"):
            self._windowed = WindowedSynthesis(G.synthesis, self.feature_block, cfg.noise_mode)
        scale = self.height / 512
        self.r1_px = max(round(cfg.r1 * scale), 1)
        self.r2_px = max(round(cfg.r2 * scale), 1)
        self.arrive_px = max(2 * scale, 2.0)

        self._w0 = self._start_latent(seed, psi, w)
        self._n_opt = min(cfg.num_layers, self.num_ws)
        if cfg.space == "w+":
            start = self._w0[:, :self._n_opt]
        else:
            start = self._w0[:, :1]
        self._w_start = start.detach().clone()

        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._w = self._w_start.clone().requires_grad_(True)
        self._handles: list[Point] = []
        self._targets: list[Point] = []
        self._mask: torch.Tensor | None = None
        self._mask_on = False
        self._drag: _Drag | None = None
        self._history = [_Snapshot(self._w_start.clone(), (), ())]
        self._hist_idx = 0
        self._dirty = False

    # ------------------------------------------------------------------ latent

    def _start_latent(self, seed: int, psi: float, w: torch.Tensor | np.ndarray | None) -> torch.Tensor:
        """[1, num_ws, w_dim] float32: given w (one code or per-layer codes), or mapping(seed's z, ψ)."""
        G = self.G
        with torch.no_grad():
            if w is None:
                z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).to(self.device)
                c = torch.zeros([1, G.c_dim], device=self.device)
                ws = G.mapping(z, c, truncation_psi=psi)
            else:
                ws = torch.as_tensor(np.asarray(w) if isinstance(w, np.ndarray) else w).to(self.device)
                ws = ws.reshape(-1, self.w_dim)
                if ws.shape[0] == 1:
                    ws = ws.repeat(self.num_ws, 1)
                if ws.shape[0] != self.num_ws:
                    raise ValueError(f"w must hold 1 or {self.num_ws} codes of size {self.w_dim}")
                ws = ws[None]
        return ws.detach().to(torch.float32).clone()

    def _compose(self, w: torch.Tensor) -> torch.Tensor:
        """Full ws [1, num_ws, w_dim]: optimised first layers + the start latent's remaining layers."""
        head = w.expand(1, self._n_opt, self.w_dim)
        return torch.cat([head, self._w0[:, self._n_opt:]], dim=1)

    def _features(self, ws: torch.Tensor, box: Box | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """The feature block of ws (float32), running only the blocks up to it: the window `box` of it when
        windowed synthesis applies, else the whole [C, h, w] map; and the origin of what is returned."""
        if box is not None and self._windowed is not None:
            return self._windowed(ws, box)
        kwargs = dict(until_block=self.feature_block, noise_mode=self.config.noise_mode)
        if self.family == "stylegan2":
            kwargs["fused_modconv"] = False
        feats = self.G.synthesis(ws, **kwargs)
        m = self._margin
        feat = feats[-1][0, :, m:feats[-1].shape[2] - m, m:feats[-1].shape[3] - m].to(torch.float32)
        assert tuple(feat.shape) == self.feature_shape, (tuple(feat.shape), self.feature_shape)
        return feat, (0, 0)

    def _image_reach(self, points_rc: torch.Tensor) -> tuple[int, int, int, int]:
        """Image rows y0..y1 and columns x0..x1 (inclusive) that one step may read around handles points_rc.

        Tracking searches r2 around a handle; motion supervision then reads the disk of radius r1 (+1 on
        the official stretched grid) around wherever tracking landed, shifted by up to 1 px and blended
        with the next pixel: r2 + r1 + 2 in all.
        """
        reach = self.r2_px + self.r1_px + 2
        lo = points_rc.min(dim=0).values.tolist()
        hi = points_rc.max(dim=0).values.tolist()
        return (max(lo[0] - reach, 0), min(hi[0] + reach, self.height - 1),
                max(lo[1] - reach, 0), min(hi[1] + reach, self.width - 1))

    def _reads_within(self, rows: torch.Tensor, cols: torch.Tensor, reach: tuple[int, int, int, int]) -> bool:
        """Whether motion supervision at pixels rows/cols (reading 1 px before, 2 px after) stays in reach."""
        y0, y1, x0, x1 = reach
        return (max(int(rows.min()) - 1, 0) >= y0 and min(int(rows.max()) + 2, self.height - 1) <= y1
                and max(int(cols.min()) - 1, 0) >= x0 and min(int(cols.max()) + 2, self.width - 1) <= x1)

    def _feat0(self, drag: _Drag) -> torch.Tensor:
        """F0, the whole feature map of the drag's first step (computed once, when first needed)."""
        if drag.feat0 is None:
            with torch.no_grad():
                drag.feat0 = self._features(self._compose(drag.w_begin))[0].detach()
        return drag.feat0

    # ------------------------------------------------------------------ points and mask

    def set_points(self, handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> None:
        """Set handle and target points (x, y) in image pixels; starts a new drag."""
        handles_ = _as_points(handles, "handles")
        targets_ = _as_points(targets, "targets")
        if len(handles_) != len(targets_):
            raise ValueError(f"{len(handles_)} handles but {len(targets_)} targets")
        for x, y in handles_ + targets_:
            if not (0 <= x <= self.width - 1 and 0 <= y <= self.height - 1):
                raise ValueError(f"point ({x}, {y}) is outside the {self.width}×{self.height} image")
        with self._lock:
            self._commit()
            self._handles = handles_
            self._targets = targets_
            self._drag = None

    def set_mask(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Region that must stay fixed ([H, W], 1 = fixed); None clears it.

        As in the official code the term applies only when the mask holds both 0 and 1.
        """
        with self._lock:
            if mask is None:
                self._mask = None
                self._mask_on = False
                return
            m = torch.as_tensor(np.asarray(mask, dtype=np.float32)).clamp(0, 1)
            if tuple(m.shape) != (self.height, self.width):
                raise ValueError(f"mask must be [{self.height}, {self.width}], got {tuple(m.shape)}")
            self._mask = m.to(self.device)
            self._mask_on = float(m.min()) == 0 and float(m.max()) == 1

    # ------------------------------------------------------------------ optimisation

    def step(self) -> StepResult:
        """One optimisation step: point tracking, then (unless every handle arrived) motion supervision."""
        with self._lock, torch.enable_grad():
            t0 = time.perf_counter()
            if not self._handles:
                raise RuntimeError("set_points() first: there is nothing to drag")
            if self._drag is None:
                self._begin_drag()
            drag = self._drag
            mask_on = self._mask_on
            reach = self._image_reach(drag.points_rc)
            box = None
            if not mask_on:
                box = Box(*self._view.block_rows(reach[0], reach[1]), *self._view.block_cols(reach[2], reach[3]))
            feat, origin = self._features(self._compose(self._w), box)
            handles_rc = drag.points_rc.to(self.device)
            if drag.ref is None:
                if origin == (0, 0) and tuple(feat.shape) == self.feature_shape:
                    drag.feat0 = feat.detach().clone()
                drag.ref = reference_features(self._view, feat, handles_rc, origin)
                drag.tracker = make_tracker(self.config.tracker, self._view, drag.ref, feat, handles_rc, self.r2_px,
                                            origin)
            targets_rc = torch.tensor([[y, x] for x, y in self._targets], dtype=torch.float64)
            points = drag.tracker(feat, handles_rc, targets_rc, origin).cpu()
            drag.points_rc = points
            self._handles = [(float(c), float(r)) for r, c in points.tolist()]
            distances = [math.hypot(tx - x, ty - y) for (x, y), (tx, ty) in zip(self._handles, self._targets)]
            done = all(d <= self.arrive_px for d in distances)
            loss_motion = loss_mask = 0.0
            if not done:
                plan = plan_motion(points, targets_rc, self.r1_px, self._grid)
                assert plan is None or self._reads_within(plan.rows, plan.cols, reach)
                zero = feat.new_zeros([])
                motion = zero if plan is None else motion_loss(self._view, feat, plan.to(self.device), origin)
                fixed = masked_l1(self._view, feat, self._feat0(drag), self._mask) if mask_on else zero
                loss = motion + self.config.mask_lambda * fixed
                (grad,) = torch.autograd.grad(loss, [self._w], allow_unused=True)
                self._w.grad = torch.zeros_like(self._w) if grad is None else grad
                drag.optimizer.step()
                self._w.grad = None
                self._dirty = True
                loss_motion, loss_mask = torch.stack([motion.detach(), fixed.detach()]).tolist()
            drag.steps += 1
            return StepResult(step=drag.steps, handles=list(self._handles), targets=list(self._targets),
                              distances=distances, done=done,
                              loss=loss_motion + self.config.mask_lambda * loss_mask,
                              seconds=time.perf_counter() - t0, loss_motion=loss_motion, loss_mask=loss_mask)

    def _begin_drag(self) -> None:
        """A drag starts from the current history entry: record the points it starts with there."""
        if not self._dirty:
            entry = self._history[self._hist_idx]
            self._history[self._hist_idx] = dataclasses.replace(entry, handles=tuple(self._handles),
                                                                targets=tuple(self._targets))
        self._drag = _Drag(self._w, self.config.lr, self._handles)

    def run(self, max_steps: int | None = None, render_every: int = 5,
            stop_event: threading.Event | None = None) -> Iterator[StepResult]:
        """Step until every handle arrives, `max_steps` steps were taken or a stop was requested.

        Yields every StepResult; `image` is rendered every `render_every` steps and on the last result.
        A stop that arrives between steps yields one extra result repeating the last step, with the image.
        The run's end is one history entry. Call run() again to resume (the drag state is kept).
        """
        limit = self.config.max_steps if max_steps is None else int(max_steps)
        self._stop.clear()  # here, not in the generator body: a stop() right after run() must count
        return self._run(limit, render_every, stop_event)

    def _run(self, limit: int, render_every: int, stop_event: threading.Event | None) -> Iterator[StepResult]:
        def stopping() -> bool:
            return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

        last = None
        try:
            for i in range(limit):
                if stopping():
                    break
                result = self.step()
                last = result
                final = result.done or i == limit - 1 or stopping()
                if final or (render_every > 0 and (i + 1) % render_every == 0):
                    result.image = self.render()
                if final:
                    self._commit()
                    yield result
                    return
                yield result
            if last is not None:
                self._commit()
                yield dataclasses.replace(last, image=self.render())
        finally:
            self._commit()

    def stop(self) -> None:
        """Ask a running `run()` to return after its current step (safe from any thread)."""
        self._stop.set()

    # ------------------------------------------------------------------ rendering and state

    def render(self) -> np.ndarray:
        """The image of the current latent, uint8 [H, W, 3] (full synthesis, no grad)."""
        ws = self.ws
        with torch.no_grad():
            img = self.G.synthesis(ws, noise_mode=self.config.noise_mode)
        return to_uint8(img)

    @property
    def ws(self) -> torch.Tensor:
        """Current latent [1, num_ws, w_dim] (a detached copy)."""
        with self._lock:
            return self._compose(self._w.detach()).clone()

    @property
    def handles(self) -> list[Point]:
        with self._lock:
            return list(self._handles)

    @property
    def targets(self) -> list[Point]:
        with self._lock:
            return list(self._targets)

    @property
    def mask(self) -> np.ndarray | None:
        with self._lock:
            return None if self._mask is None else self._mask.cpu().numpy()

    @property
    def steps(self) -> int:
        """Steps taken in the current drag."""
        with self._lock:
            return 0 if self._drag is None else self._drag.steps

    # ------------------------------------------------------------------ history

    def _commit(self) -> None:
        """Record the current state as a new history entry if it changed since the last one."""
        with self._lock:
            if not self._dirty:
                return
            del self._history[self._hist_idx + 1:]
            self._history.append(_Snapshot(self._w.detach().clone(), tuple(self._handles), tuple(self._targets)))
            self._hist_idx += 1
            self._dirty = False

    def _restore(self, index: int) -> None:
        entry = self._history[index]
        self._hist_idx = index
        self._w = entry.w.clone().requires_grad_(True)
        self._handles = list(entry.handles)
        self._targets = list(entry.targets)
        self._drag = None
        self._dirty = False

    @property
    def can_undo(self) -> bool:
        with self._lock:
            return self._hist_idx > 0 or self._dirty

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return self._hist_idx + 1 < len(self._history) and not self._dirty

    def undo(self) -> bool:
        """Go back to the state before the last drag (latent and points). Returns False if there is none."""
        with self._lock:
            self._commit()
            if self._hist_idx == 0:
                return False
            self._restore(self._hist_idx - 1)
            return True

    def redo(self) -> bool:
        """Re-apply the drag undone last. Returns False if there is none."""
        with self._lock:
            if not self.can_redo:
                return False
            self._restore(self._hist_idx + 1)
            return True

    def reset(self) -> None:
        """Back to the start latent; clears points, history and the current drag (the mask is kept)."""
        with self._lock:
            self._w = self._w_start.clone().requires_grad_(True)
            self._handles = []
            self._targets = []
            self._drag = None
            self._history = [_Snapshot(self._w_start.clone(), (), ())]
            self._hist_idx = 0
            self._dirty = False
