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
`DragConfig.tracker` names the drag method (`methods/`): the default, "official", is the one above; a
method supplies the tracking, the arrival test and the motion loss, and may bring the keep-the-rest term
(`locality.py`: λ × the masked L1 of the 32 × 32 block away from the drag, while no mask is painted).

Where we do less work than the original: a step runs the synthesis only up to the feature block, with
unfused modulated convolutions (style gradients without per-sample weight gradients); it computes the
StyleGAN2 blocks above the lowest whole-map block only on the window the step reads (`window.py`) — the
handles' window, joined with the mask's fixed region when a mask term applies (the two apart, or the
whole map, when that join exceeds WINDOW_MAX_SHARE of it); it reads the upsampled feature map sparsely
(`features.py`); and it renders the image only when asked, or when a `RenderPolicy` says so
(`render_policy.py`, `preview.py`).

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
from . import render_costs
from . import snapshot as snapshots
from .features import UpsampledView, masked_l1
from .locality import KEEP_RADIUS, coarse_block, keep_l1, keep_mask
from . import methods
from .snapshot import DragProgress, DragSnapshot
from .preview import direct_supported, render_direct, render_preview
from .render_policy import RenderPolicy, RenderSchedule
from .tracking import reference_features
from .window import Box, WindowedSynthesis

Point = tuple[float, float]
SPACES = ("w", "w+")
WINDOW_MAX_SHARE = 0.75  # above this share of the map a masked step computes it whole (break-even ~0.8 at 512)


@dataclass(frozen=True)
class DragConfig:
    """Drag hyper-parameters; radii are in pixels of a 512-pixel-high image and scale with H/512.

    Frozen: the defaults here are the app's defaults too; change a session's with `DragSession.update_config`."""

    space: str = "w+"                 # "w+" (per-layer codes) or "w" (one shared code)
    lr: float = 1e-3                  # Adam step size (the paper uses 2e-3 on FFHQ / AFHQ-cat / car)
    r1: float = 3.0                   # motion-supervision radius
    r2: float = 12.0                  # point-tracking search half-size
    mask_lambda: float = 20.0         # weight of the fixed-region term
    feature_block: int | None = None  # synthesis block (StyleGAN3: layer) read as features; None = default
    max_steps: int = 200              # steps of one `run()` unless it is given another limit
    num_layers: int = 6               # style layers optimised; the rest stay at the start latent
    noise_mode: str = "const"
    windowed: bool = True             # StyleGAN2: compute the feature block only where the step reads it
    tracker: str = methods.DEFAULT    # drag method, one of methods.names()

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"lr must be a number in (0, 1], got {self.lr}")
        if not (math.isfinite(self.mask_lambda) and self.mask_lambda >= 0):
            raise ValueError(f"mask_lambda must be a finite number ≥ 0, got {self.mask_lambda}")
        if not (self.r1 > 0 and self.r2 > 0):
            raise ValueError(f"r1 and r2 must be positive, got {self.r1}, {self.r2}")
        if self.max_steps < 0 or self.num_layers < 1:
            raise ValueError("max_steps must be ≥ 0 and num_layers ≥ 1")
        methods.get(self.tracker)


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
    loss_keep: float = 0.0     # the keep-the-rest term (locality.py), before its weight
    image: np.ndarray | None = field(default=None, repr=False)
    image_kind: str | None = None  # what `image` is: "full" (exact render) or "preview" (see preview.py)
    end: str = ""              # set on the last result of a run: "arrived", "limit", "stopped" or "budget"


class _Drag:
    """A drag under way, as live tensors (its plain-data form is `DragProgress`): first latent, references,
    tracked handles, optimiser. It survives stop/resume."""

    def __init__(self, w: torch.Tensor, progress: DragProgress) -> None:
        self.lr = float(progress.lr)
        self.optimizer = torch.optim.Adam([w], lr=self.lr)
        if progress.adam:
            self.optimizer.load_state_dict({
                "state": {0: {"step": torch.tensor(float(progress.adam["step"])),
                              "exp_avg": torch.as_tensor(progress.adam["exp_avg"]).to(w.device).clone(),
                              "exp_avg_sq": torch.as_tensor(progress.adam["exp_avg_sq"]).to(w.device).clone()}},
                "param_groups": self.optimizer.state_dict()["param_groups"]})
        self.w_begin = torch.as_tensor(progress.w_begin).to(w.device).clone()  # latent of the first step (F0's)
        self.feat0: torch.Tensor | None = None   # F0 (or the window feat0_box of it), when a mask term needs it
        self.feat0_box: Box | None = None
        self.keep0: torch.Tensor | None = None   # the coarse block's map at w_begin, when the keep term needs it
        self.keep_mask: torch.Tensor | None = None
        self.ref = None if progress.ref is None else torch.as_tensor(progress.ref).to(w.device).clone()  # [N, C]
        self.method: methods.DragMethod | None = None  # made at the first step (or from tracker_state)
        self.method_class = methods.get(progress.tracker)  # fixed when the drag began, like its step size
        self.tracker_state = progress.tracker_state
        self.points_rc = torch.as_tensor(progress.points_rc, dtype=torch.int64).clone()  # CPU
        self.steps = int(progress.steps)
        self.committed_steps = self.steps - int(progress.run_steps)  # steps recorded in earlier history entries
        self.start_handles = progress.start_handles
        self.resumed = progress.resumed

    def progress(self) -> DragProgress:
        state = self.optimizer.state_dict()["state"].get(0)
        adam = {} if not state else {"step": float(state["step"]), "exp_avg": state["exp_avg"].cpu().numpy().copy(),
                                     "exp_avg_sq": state["exp_avg_sq"].cpu().numpy().copy()}
        return DragProgress(w_begin=self.w_begin.cpu().numpy().copy(),
                            ref=None if self.ref is None else self.ref.detach().cpu().numpy().copy(),
                            points_rc=self.points_rc.numpy().copy(), steps=self.steps,
                            start_handles=tuple(self.start_handles), adam=adam, lr=self.lr,
                            run_steps=self.steps - self.committed_steps, resumed=self.resumed,
                            tracker=self.method_class.name,
                            tracker_state=self.method.state() if self.method is not None else self.tracker_state)


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


def _inside(feats: torch.Tensor, margin: int) -> torch.Tensor:
    """The [C, h, w] float32 part of a [1, C, H, W] block output that covers the image (margin cropped)."""
    return feats[0, :, margin:feats.shape[2] - margin, margin:feats.shape[3] - margin].to(torch.float32)


def _box_of(feat: torch.Tensor, origin: tuple[int, int]) -> Box:
    """The block window a [C, rows, cols] feature window starting at `origin` covers."""
    return Box(origin[0], origin[0] + feat.shape[1], origin[1], origin[1] + feat.shape[2])


def _area(box: Box) -> int:
    return (box.r1 - box.r0) * (box.c1 - box.c0)


def _contains(outer: Box | None, inner: Box) -> bool:
    return outer is not None and outer.r0 <= inner.r0 and outer.c0 <= inner.c0 \
        and inner.r1 <= outer.r1 and inner.c1 <= outer.c1


class DragSession:
    """Drag handle points to targets on one generator by optimising the latent (see module docstring)."""

    def __init__(self, G: torch.nn.Module, seed: int = 0, psi: float = 0.7, w: torch.Tensor | np.ndarray | None = None,
                 config: DragConfig | None = None) -> None:
        self.G = G
        cfg = config if config is not None else DragConfig()
        self.family = getattr(G, "family", "stylegan2")
        self.height = int(G.img_height)
        self.width = int(G.img_width)
        self.num_ws = int(G.num_ws)
        self.w_dim = int(G.w_dim)
        tensors = list(G.parameters()) + list(G.buffers())
        self.device = tensors[0].device if tensors else torch.device("cpu")
        # Render with preview.py's direct CPU forms (exact image and preview; StyleGAN2 on CPU), else with
        # `synthesis(ws)` as on a GPU; False on a CPU session runs the GPU's render path (tests do).
        self.direct_render: bool = direct_supported(G.synthesis, self.device)

        num_blocks = len(G.synthesis.feature_shapes())
        self.feature_block = default_feature_block(G) if cfg.feature_block is None else int(cfg.feature_block)
        if not 0 <= self.feature_block < num_blocks:
            raise ValueError(f"feature_block must be in [0, {num_blocks}), got {self.feature_block}")
        channels, feat_h, feat_w = G.synthesis.feature_shapes()[self.feature_block]
        margins = G.synthesis.feature_margins()          # StyleGAN3's layers reach past the image; StyleGAN2's: 0
        self._margin = int(margins[self.feature_block])
        feat_h, feat_w = feat_h - 2 * self._margin, feat_w - 2 * self._margin
        self.feature_shape = (int(channels), int(feat_h), int(feat_w))
        self._view = UpsampledView.create((feat_h, feat_w), (self.height, self.width), self.device)
        self._coarse_block = coarse_block(G.synthesis, self.feature_block)
        self._coarse_margin = int(margins[self._coarse_block])
        self._windowed = None
        if cfg.windowed and self.family == "stylegan2" and cfg.noise_mode in ("const", "none"):
            self._windowed = WindowedSynthesis(G.synthesis, self.feature_block, cfg.noise_mode)
        scale = self.height / 512
        self.r1_px = max(round(cfg.r1 * scale), 1)
        self.r2_px = max(round(cfg.r2 * scale), 1)
        self.arrive_px = max(2 * scale, 2.0)
        self._geometry = methods.DragGeometry.create(self._view, self.r1_px, self.r2_px, self.arrive_px)

        self._w0 = self._start_latent(seed, psi, w)
        self._n_opt = min(cfg.num_layers, self.num_ws)
        if cfg.space == "w+":
            start = self._w0[:, :self._n_opt]
        else:
            start = self._w0[:, :1]
        self._w_start = start.detach().clone()

        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._load(snapshots.start(cfg, self._w0.cpu().numpy(), self._w_start.cpu().numpy(), self.height,
                                   self.width))

    @classmethod
    def from_snapshot(cls, G: torch.nn.Module, snap: DragSnapshot) -> "DragSession":
        """A session on G that continues exactly where `snap` (from `snapshot()`, maybe in another process)
        left off. No mapping or synthesis runs."""
        if (int(G.img_height), int(G.img_width)) != (snap.height, snap.width):
            raise ValueError(f"the snapshot is of a {snap.width}×{snap.height} image; this generator makes "
                             f"{G.img_width}×{G.img_height}")
        session = cls(G, w=snap.w0, config=snap.config)
        session._load(snap)
        return session

    # ------------------------------------------------------------------ state

    def snapshot(self) -> DragSnapshot:
        """The whole state as plain picklable data (latents, points, mask, history, the drag under way)."""
        with self._lock:
            return dataclasses.replace(self._state, w=self._w.detach().cpu().numpy().copy(),
                                       handles=tuple(self._handles), targets=tuple(self._targets),
                                       dirty=self._dirty, drag=None if self._drag is None else self._drag.progress())

    def _load(self, snap: DragSnapshot) -> None:
        """Make `snap` the session's state (live tensors on the generator's device)."""
        with self._lock:
            if tuple(snap.w.shape) != tuple(self._w_start.shape):
                raise ValueError(f"snapshot latent {tuple(snap.w.shape)} does not fit {tuple(self._w_start.shape)}")
            self._state = snap
            self._w = torch.as_tensor(snap.w, dtype=torch.float32).to(self.device).clone().requires_grad_(True)
            self._handles = list(snap.handles)
            self._targets = list(snap.targets)
            self._dirty = snap.dirty
            self._drag = None if snap.drag is None else _Drag(self._w, snap.drag)
            self._mask = None if snap.mask is None else torch.as_tensor(snap.mask).to(self.device)
            self._mask_on = snap.mask is not None and float(snap.mask.min()) == 0 and float(snap.mask.max()) == 1
            self._mask_box = self._block_box_of(self._mask != 0) if self._mask_on else None  # fixed region's window

    def _apply(self, edit, *args) -> None:
        with self._lock:
            self._load(edit(self.snapshot(), *args))

    @property
    def config(self) -> DragConfig:
        return self._state.config

    def update_config(self, **changes) -> None:
        """Change drag settings (validated): lr applies from the next drag, mask_lambda from the next step;
        the latent space, feature block, layer count and noise mode are fixed for a session."""
        self._apply(lambda snap: snapshots.with_config(snap, **changes))

    # ------------------------------------------------------------------ latent

    def _start_latent(self, seed: int, psi: float, w: torch.Tensor | np.ndarray | None) -> torch.Tensor:
        """[1, num_ws, w_dim] float32: given w (one code or per-layer codes), or mapping(seed's z, ψ)."""
        G = self.G
        with torch.no_grad():
            if w is None:
                ws = G.latent_from_seed(seed, psi)
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
        return snapshots.compose(w, self._w0, self._n_opt)

    def _features(self, ws: torch.Tensor, box: Box | None = None,
                  coarse: bool = False) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """The feature block of ws (float32), running only the blocks up to it: the window `box` of it when
        windowed synthesis applies (which also skips the style gradients of the layers not optimised), else
        the whole [C, h, w] map; the origin of what is returned; with `coarse`, the keep term's whole
        coarse block (locality.py, margins cropped), else None."""
        if self._windowed is not None:
            return self._windowed(ws, box, grad_layers=self._n_opt, coarse=self._coarse_block if coarse else None)
        kwargs = dict(until_block=self.feature_block, noise_mode=self.config.noise_mode)
        if self.family == "stylegan2":
            kwargs["fused_modconv"] = False
        feats = self.G.synthesis(ws, **kwargs)
        feat = _inside(feats[-1], self._margin)
        assert tuple(feat.shape) == self.feature_shape, (tuple(feat.shape), self.feature_shape)
        return feat, (0, 0), _inside(feats[self._coarse_block], self._coarse_margin) if coarse else None

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

    def _feat0(self, drag: _Drag, need: Box) -> torch.Tensor:
        """F0, the feature map of the drag's first step, on the block window `need` (kept from the first step
        or computed once when the kept window does not hold `need`)."""
        held = drag.feat0_box
        if drag.feat0 is None or not _contains(held, need):
            _, height, width = self.feature_shape
            with torch.no_grad():
                feat, origin, _ = self._features(self._compose(drag.w_begin),
                                                 None if need.covers(height, width) else need)
            drag.feat0, drag.feat0_box = feat.detach(), _box_of(feat, origin)
            held = drag.feat0_box
        return drag.feat0[:, need.r0 - held.r0:need.r1 - held.r0, need.c0 - held.c0:need.c1 - held.c0]

    def _step_windows(self, handle_box: Box, fixed_box: Box | None) -> list[Box | None]:
        """Block windows a step computes: the handles' window, joined with the mask's fixed region when a
        mask term applies; the two apart when their join exceeds WINDOW_MAX_SHARE of the map but they
        together do not (a fixed region far from the handles); else [None], the whole map.

        The floor of a masked step: the mask term sums over every fixed pixel, so the step must compute the
        feature block (forward and backward) on the fixed region's window — the whole map when a flexible area
        is painted, since the fixed region then surrounds it — and costs the whole-map unmasked step there
        (`python -m bench.drag_step --masked`: at most that + 20 %). What it need not compute is a window
        around the handles beyond what the fixed region already covers; the unmasked step computes only that
        window, hence several times less (about 6× at 128 px, where the window is a few pixels)."""
        if fixed_box is None:
            return [handle_box]
        box = Box(min(handle_box.r0, fixed_box.r0), max(handle_box.r1, fixed_box.r1),
                  min(handle_box.c0, fixed_box.c0), max(handle_box.c1, fixed_box.c1))
        _, height, width = self.feature_shape
        limit = WINDOW_MAX_SHARE * height * width
        if _area(box) <= limit:
            return [box]
        if self._windowed is not None and _area(handle_box) + _area(fixed_box) <= limit:
            return [handle_box, fixed_box]
        return [None]

    # ------------------------------------------------------------------ points and mask

    def set_points(self, handles: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]) -> None:
        """Set handle and target points (x, y) in image pixels; starts a new drag."""
        self._apply(snapshots.set_points, handles, targets)

    def set_mask(self, mask: np.ndarray | torch.Tensor | None) -> None:
        """Region that must stay fixed ([H, W], 1 = fixed); None clears it.

        As in the official code the term applies only when the mask holds both 0 and 1.
        """
        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
        self._apply(snapshots.set_mask, mask)

    def _block_box_of(self, active: torch.Tensor) -> Box:
        """Block window [rows, cols) that upsampled reads of the True pixels of active [H, W] touch."""
        rows = torch.nonzero(active.any(dim=1)).flatten()
        cols = torch.nonzero(active.any(dim=0)).flatten()
        return Box(*self._view.block_rows(int(rows[0]), int(rows[-1])),
                   *self._view.block_cols(int(cols[0]), int(cols[-1])))

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
            fixed_box = self._mask_box if mask_on else None
            windows = self._step_windows(Box(*self._view.block_rows(reach[0], reach[1]),
                                             *self._view.block_cols(reach[2], reach[3])), fixed_box)
            keep = 0.0 if mask_on else drag.method_class.keep_lambda
            ws = self._compose(self._w)
            feat, origin, coarse = self._features(ws, windows[0], coarse=keep > 0)
            fixed_feat, fixed_origin = (feat, origin) if len(windows) == 1 else self._features(ws, windows[1])[:2]
            if keep and drag.keep0 is None:
                self._begin_keep(drag, coarse, windows[0])
            handles_rc = drag.points_rc.to(self.device)
            if drag.ref is None:
                drag.feat0, drag.feat0_box = fixed_feat.detach().clone(), _box_of(fixed_feat, fixed_origin)
                drag.ref = reference_features(self._view, feat, handles_rc, origin)
            if drag.method is None:                # the first step, or a drag continued from a snapshot
                drag.method = drag.method_class(self._geometry, drag.ref, feat, handles_rc, origin)
                if drag.tracker_state:
                    drag.method.load_state(drag.tracker_state)
                drag.optimizer.param_groups[0]["lr"] = drag.lr * drag.method_class.lr_scale
            targets_rc = torch.tensor([[y, x] for x, y in self._targets], dtype=torch.float64)
            points = drag.method.track(feat, handles_rc, targets_rc, origin).cpu()
            drag.points_rc = points
            self._handles = [(float(c), float(r)) for r, c in points.tolist()]
            distances = [math.hypot(tx - x, ty - y) for (x, y), (tx, ty) in zip(self._handles, self._targets)]
            done = drag.method.arrived(distances)
            loss_motion = loss_mask = loss_keep = 0.0
            if not done:
                zero = feat.new_zeros([])
                motion = drag.method.motion_loss(feat, points, targets_rc, origin)
                fixed = zero
                if mask_on:
                    rows = slice(fixed_box.r0 - fixed_origin[0], fixed_box.r1 - fixed_origin[0])
                    cols = slice(fixed_box.c0 - fixed_origin[1], fixed_box.c1 - fixed_origin[1])
                    fixed = masked_l1(self._view, fixed_feat[:, rows, cols], self._feat0(drag, fixed_box),
                                      self._mask, origin=fixed_box.origin)
                kept = keep_l1(coarse, drag.keep0, drag.keep_mask) if keep else zero
                loss = motion + self.config.mask_lambda * fixed + keep * kept
                (grad,) = torch.autograd.grad(loss, [self._w], allow_unused=True)
                self._w.grad = torch.zeros_like(self._w) if grad is None else grad
                drag.optimizer.step()
                self._w.grad = None
                self._dirty = True
                loss_motion, loss_mask, loss_keep = torch.stack([motion.detach(), fixed.detach(),
                                                                 kept.detach()]).tolist()
            drag.steps += 1
            return StepResult(step=drag.steps, handles=list(self._handles), targets=list(self._targets),
                              distances=distances, done=done,
                              loss=loss_motion + self.config.mask_lambda * loss_mask + keep * loss_keep,
                              seconds=time.perf_counter() - t0, loss_motion=loss_motion, loss_mask=loss_mask,
                              loss_keep=loss_keep)

    def _begin_keep(self, drag: _Drag, coarse: torch.Tensor, box: Box | None) -> None:
        """The keep term's F0 and mask (locality.py) for this drag: F0 is this step's coarse map at the drag's
        first step, else (a resumed drag) the same computation at w_begin; the mask from its start handles."""
        if drag.steps == 0:
            drag.keep0 = coarse.detach().clone()
        else:
            with torch.no_grad():
                drag.keep0 = self._features(self._compose(drag.w_begin), box, coarse=True)[2].detach()
        drag.keep_mask = keep_mask(tuple(drag.keep0.shape[1:]), (self.height, self.width), drag.start_handles,
                                   self._targets, KEEP_RADIUS * self.height).to(self.device)

    def _begin_drag(self) -> None:
        """A drag starts from the current history entry: record the points it starts with there."""
        self._apply(snapshots.begin_drag)

    def run(self, max_steps: int | None = None, render_every: int = 5,
            stop_event: threading.Event | None = None,
            policy: RenderPolicy | None = None, budget_s: float | None = None) -> Iterator[StepResult]:
        """Step until every handle arrives, `max_steps` steps were taken or a stop was requested.

        Yields every StepResult. With a `policy` (render_policy.py) the image is rendered when the policy
        says so, from measured step and render times — a preview when `policy.preview` and the device has
        one, `image_kind` saying which; without one it is rendered in full every `render_every` steps. The
        last result always carries the exact full render (`image_kind` "full") and says why the run ended
        (`end`); a previewing policy yields that last step once before, with its preview, so that the view
        shows where the drag ended without waiting for the exact render (unless that render's known cost
        keeps the view within its age). A stop that arrives between steps yields one extra result repeating
        the last step, with the image. The run's end is one history entry. Call run() again to resume (the
        drag state is kept).

        `budget_s` bounds the run's wall time (a ZeroGPU grant): the run ends ("budget") before a step that
        would probably not finish within it, and records no history entry, so the next run continues the same
        drag as if never interrupted (the whole drag becomes one entry when it really ends).
        """
        limit = self.config.max_steps if max_steps is None else int(max_steps)
        self._stop.clear()  # here, not in the generator body: a stop() right after run() must count
        return self._run(limit, render_every, stop_event, policy, budget_s)

    def _run(self, limit: int, render_every: int, stop_event: threading.Event | None,
             policy: RenderPolicy | None, budget_s: float | None) -> Iterator[StepResult]:
        def stopping() -> bool:
            return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

        started = time.perf_counter()
        schedule = None
        if policy is not None:
            schedule = policy.start(started, render_costs.cost(self.G.synthesis, self._view_kind(policy.preview)))
        last = None
        paused = False
        try:
            for i in range(limit):
                if stopping():
                    break
                result = self.step()
                render_costs.record(self.G.synthesis, "step", result.seconds)
                last = result
                elapsed = time.perf_counter() - started
                stopped = stopping()
                paused = (budget_s is not None and not result.done and i < limit - 1 and not stopped
                          and elapsed * (i + 2) / (i + 1) > budget_s)
                final = result.done or i == limit - 1 or stopped or paused
                if final:
                    yield from self._closing_preview(result, schedule, policy)
                    result.end = ("arrived" if result.done else "stopped" if stopped
                                  else "budget" if paused else "limit")
                    result.image, result.image_kind = self.render(), "full"
                elif schedule is not None:
                    if schedule.step_done(time.perf_counter(), result.seconds):
                        result.image, result.image_kind = self._scheduled_view(schedule, policy.preview)
                elif render_every > 0 and (i + 1) % render_every == 0:
                    result.image, result.image_kind = self.render(), "full"
                if final:
                    if not paused:
                        self._commit()
                    yield result
                    return
                yield result
            if last is not None:
                self._commit()
                yield from self._closing_preview(last, schedule, policy)
                yield dataclasses.replace(last, image=self.render(), image_kind="full", end="stopped")
        finally:
            if not paused:
                self._commit()

    def _closing_preview(self, result: StepResult, schedule: RenderSchedule | None,
                         policy: RenderPolicy | None) -> Iterator[StepResult]:
        """Before a previewing run's exact closing render, a copy of its last result with the preview of where
        the drag ended — unless the exact image, at its known cost, will come within the policy's view age."""
        if schedule is None or not policy.preview or not self.has_preview:
            return
        full_s = render_costs.cost(self.G.synthesis, "full")
        if full_s is not None and time.perf_counter() - schedule.view_time + full_s <= policy.max_age_s:
            return
        image, kind = self._scheduled_view(schedule, True)
        yield dataclasses.replace(result, image=image, image_kind=kind, end=None)

    def stop(self) -> None:
        """Ask a running `run()` to return after its current step (safe from any thread)."""
        self._stop.set()

    # ------------------------------------------------------------------ rendering and state

    def render(self, preview: bool = False) -> np.ndarray:
        """The image of the current latent, uint8 [H, W, 3]: the exact full synthesis (no grad; on CPU for
        StyleGAN2 its direct float32 form, preview.py), or with `preview` the cheaper preview where
        `has_preview`, else the full one."""
        return self._render_view(preview)[0]

    @property
    def has_preview(self) -> bool:
        """Whether `render(preview=True)` is a preview cheaper than the full render on this device."""
        return self.direct_render

    def _view_kind(self, preview: bool) -> str:
        """The kind of image `render(preview)` gives here: "preview" where this device has one, else "full"."""
        return "preview" if preview and self.has_preview else "full"

    def _scheduled_view(self, schedule: RenderSchedule, preview: bool) -> tuple[np.ndarray, str]:
        """`_render_view`, its time told to the run's render `schedule`."""
        t0 = time.perf_counter()
        view = self._render_view(preview)
        schedule.rendered(time.perf_counter(), time.perf_counter() - t0)
        return view

    def _render_view(self, preview: bool) -> tuple[np.ndarray, str]:
        """The image of the current latent and its kind, "preview" or "full" (its time is recorded in
        render_costs.py)."""
        t0 = time.perf_counter()
        ws, synthesis = self.ws, self.G.synthesis
        kind = self._view_kind(preview)
        if kind == "preview":
            img = render_preview(synthesis, ws, self.config.noise_mode)
        elif self.direct_render:
            img = render_direct(synthesis, ws, self.config.noise_mode)
        else:
            with torch.no_grad():
                img = synthesis(ws, noise_mode=self.config.noise_mode)
        image = to_uint8(img)
        render_costs.record(synthesis, kind, time.perf_counter() - t0)
        return image, kind

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
            return None if self._state.mask is None else self._state.mask.copy()

    @property
    def steps(self) -> int:
        """Steps taken in the current drag."""
        with self._lock:
            return 0 if self._drag is None else self._drag.steps

    # ------------------------------------------------------------------ history

    def _commit(self) -> None:
        with self._lock:
            if self._dirty:
                self._apply(snapshots.commit)

    def commit(self) -> None:
        """Record the current state as a new history entry if the latent moved since the last one (`run()`
        does this when it ends; callers stepping with `step()` say when their drag is over)."""
        self._commit()

    @property
    def can_undo(self) -> bool:
        with self._lock:
            return self._state.hist_idx > 0 or self._dirty

    @property
    def can_redo(self) -> bool:
        with self._lock:
            return self._state.hist_idx + 1 < len(self._state.history) and not self._dirty

    def undo(self) -> bool:
        """Go back to the state before the last drag (latent and points). Returns False if there is none."""
        with self._lock:
            snap = snapshots.undo(self.snapshot())
            if snap is None:
                self._commit()
                return False
            self._load(snap)
            return True

    def redo(self) -> bool:
        """Re-apply the drag undone last. Returns False if there is none."""
        with self._lock:
            snap = snapshots.redo(self.snapshot())
            if snap is None:
                return False
            self._load(snap)
            return True

    def reset(self) -> None:
        """Back to the start latent; clears points, history and the current drag (the mask is kept)."""
        self._apply(snapshots.reset)
