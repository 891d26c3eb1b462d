"""One drag step: the feature windows it computes and the loss it assembles.

Per step (official XingangPan/DragGAN `viz/renderer.py` semantics): synthesise the feature block from the
current latent, ask the drag method (`methods/`) where the handles are now (point tracking) and whether the
drag arrived, and unless it did, take one Adam step on

    motion loss (the method's) + mask_lambda × the masked L1 to the first step's features (a painted mask)
                               + keep_lambda × the keep-the-rest term (`locality.py`, the method's, no mask)

Where we do less work than the original: the synthesis runs only up to the feature block, with unfused
modulated convolutions (style gradients without per-sample weight gradients), and where the network can,
only on the window the step reads: the handles' window (`image_reach`), joined with the mask's fixed region
when a mask term applies (the two apart, or the whole map, when that join exceeds WINDOW_MAX_SHARE of it).
The upsampled feature map is read sparsely (`features.py`).

The synthesis network computes the feature maps (`networks/generator.DragSynthesis`). StyleGAN3 feature
layers carry a margin outside the image; the network drops it before the step reads them, so that feature
pixels line up with image pixels (the official code upsamples the margin too, which shifts features near the
image border by up to margin × H / size pixels).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from . import methods
from . import snapshot as snapshots
from .config import DragConfig, Point
from .features import UpsampledView, masked_l1
from .locality import KEEP_RADIUS, coarse_block, keep_l1, keep_mask
from .snapshot import DragProgress
from ..networks.generator import Box
from .tracking import reference_features

WINDOW_MAX_SHARE = 0.75  # above this share of the map a masked step computes it whole (break-even ~0.8 at 512)


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
    image_kind: str | None = None  # what `image` is: "full" (the exact render) or "preview" (a cheaper one)
    end: str = ""              # set on the last result of a run: "arrived", "limit", "stopped" or "budget"


@dataclass(frozen=True)
class FixedRegion:
    """A painted mask that applies (it holds both 0 and 1): [H, W] on the device, and its block window."""

    mask: torch.Tensor
    box: Box


class ActiveDrag:
    """A drag under way, as live tensors (its plain-data form is `DragProgress`): first latent, references,
    tracked handles, optimiser, drag method. It survives stop/resume."""

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
        self.method: methods.DragMethod | None = None      # made at the first step (or from method_state)
        self.method_class = methods.get(progress.tracker)  # fixed when the drag began, like its step size
        self.method_state = progress.tracker_state
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
                            tracker_state=self.method.state() if self.method is not None else self.method_state)


def _box_of(feat: torch.Tensor, origin: tuple[int, int]) -> Box:
    """The block window a [C, rows, cols] feature window starting at `origin` covers."""
    return Box(origin[0], origin[0] + feat.shape[1], origin[1], origin[1] + feat.shape[2])


def _area(box: Box) -> int:
    return (box.r1 - box.r0) * (box.c1 - box.c0)


def _contains(outer: Box | None, inner: Box) -> bool:
    return outer is not None and outer.r0 <= inner.r0 and outer.c0 <= inner.c0 \
        and inner.r1 <= outer.r1 and inner.c1 <= outer.c1


class DragStep:
    """The step of one session's drags on generator G: its feature block and windows, its sizes in pixels,
    the latent it composes; `__call__` takes one step of a drag (see the module docstring)."""

    def __init__(self, G: torch.nn.Module, config: DragConfig, w0: torch.Tensor, n_opt: int) -> None:
        """w0: the session's start latent [1, num_ws, w_dim]; n_opt: how many of its first layers are optimised."""
        self.synthesis = G.synthesis
        self.w0, self.n_opt = w0, n_opt
        self.noise_mode = config.noise_mode
        self.height, self.width = int(G.img_height), int(G.img_width)
        self.device = w0.device
        num_blocks = len(G.synthesis.feature_shapes())
        self.feature_block = G.synthesis.default_feature_block() if config.feature_block is None \
            else int(config.feature_block)
        if not 0 <= self.feature_block < num_blocks:
            raise ValueError(f"feature_block must be in [0, {num_blocks}), got {self.feature_block}")
        channels, feat_h, feat_w = G.synthesis.feature_shapes()[self.feature_block]
        margin = int(G.synthesis.feature_margins()[self.feature_block])  # StyleGAN3's layers reach past the image
        feat_h, feat_w = feat_h - 2 * margin, feat_w - 2 * margin
        self.feature_shape = (int(channels), int(feat_h), int(feat_w))
        self.view = UpsampledView.create((feat_h, feat_w), (self.height, self.width), self.device)
        self.coarse_block = coarse_block(G.synthesis, self.feature_block)
        self.windowed = config.windowed and G.synthesis.supports_windows(config.noise_mode)
        self._whole = Box(0, feat_h, 0, feat_w)
        self.r1_px, self.r2_px, self.arrive_px = config.radii_px(self.height)
        self.geometry = methods.DragGeometry.create(self.view, self.r1_px, self.r2_px, self.arrive_px)

    def compose(self, w: torch.Tensor) -> torch.Tensor:
        """Full ws [1, num_ws, w_dim]: optimised first layers + the start latent's remaining layers."""
        return snapshots.compose(w, self.w0, self.n_opt)

    def fixed_region(self, mask: torch.Tensor) -> FixedRegion | None:
        """The mask term's region for mask [H, W] on the device (1 = fixed), or None when it does not apply
        (as in the official code: unless the mask holds both 0 and 1)."""
        if not (float(mask.min()) == 0 and float(mask.max()) == 1):
            return None
        active = mask != 0
        rows = torch.nonzero(active.any(dim=1)).flatten()
        cols = torch.nonzero(active.any(dim=0)).flatten()
        return FixedRegion(mask, Box(*self.view.block_rows(int(rows[0]), int(rows[-1])),
                                     *self.view.block_cols(int(cols[0]), int(cols[-1]))))

    def __call__(self, drag: ActiveDrag, w: torch.Tensor, targets: Sequence[Point], fixed: FixedRegion | None,
                 mask_lambda: float) -> StepResult:
        """One step of `drag`, moving the optimised latent w (requires grad) unless every handle arrived."""
        t0 = time.perf_counter()
        reach = self.image_reach(drag.points_rc)
        windows = self._windows(Box(*self.view.block_rows(reach[0], reach[1]),
                                    *self.view.block_cols(reach[2], reach[3])), None if fixed is None else fixed.box)
        keep = 0.0 if fixed is not None else drag.method_class.keep_lambda
        ws = self.compose(w)
        feat, origin, coarse = self.features(ws, windows[0], coarse=keep > 0)
        fixed_feat, fixed_origin = (feat, origin) if len(windows) == 1 else self.features(ws, windows[1])[:2]
        if keep and drag.keep0 is None:
            self._begin_keep(drag, coarse, windows[0], targets)
        handles_rc = drag.points_rc.to(self.device)
        if drag.ref is None:
            drag.feat0, drag.feat0_box = fixed_feat.detach().clone(), _box_of(fixed_feat, fixed_origin)
            drag.ref = reference_features(self.view, feat, handles_rc, origin)
        if drag.method is None:                # the first step, or a drag continued from a snapshot
            self._begin_method(drag, feat, handles_rc, origin)
        targets_rc = torch.tensor([[y, x] for x, y in targets], dtype=torch.float64)
        points = drag.method.track(feat, handles_rc, targets_rc, origin).cpu()
        drag.points_rc = points
        handles = [(float(c), float(r)) for r, c in points.tolist()]
        distances = [math.hypot(tx - x, ty - y) for (x, y), (tx, ty) in zip(handles, targets)]
        done = drag.method.arrived(distances)
        losses = [0.0, 0.0, 0.0]
        if not done:
            zero = feat.new_zeros([])
            terms = [drag.method.motion_loss(feat, points, targets_rc, origin),
                     zero if fixed is None else self._fixed_l1(drag, fixed, fixed_feat, fixed_origin),
                     keep_l1(coarse, drag.keep0, drag.keep_mask) if keep else zero]
            losses = self._descend(drag, w, terms, mask_lambda, keep)
        drag.steps += 1
        return StepResult(step=drag.steps, handles=handles, targets=list(targets), distances=distances, done=done,
                          loss=losses[0] + mask_lambda * losses[1] + keep * losses[2],
                          seconds=time.perf_counter() - t0, loss_motion=losses[0], loss_mask=losses[1],
                          loss_keep=losses[2])

    def _begin_method(self, drag: ActiveDrag, feat: torch.Tensor, handles_rc: torch.Tensor,
                      origin: tuple[int, int]) -> None:
        """The drag's method object, from its first step's map (and the state it learnt, when the drag
        continues from a snapshot); Adam's step size becomes the method's multiple of the drag's."""
        drag.method = drag.method_class(self.geometry, drag.ref, feat, handles_rc, origin)
        if drag.method_state:
            drag.method.load_state(drag.method_state)
        drag.optimizer.param_groups[0]["lr"] = drag.lr * drag.method_class.lr_scale

    def _fixed_l1(self, drag: ActiveDrag, fixed: FixedRegion, feat: torch.Tensor,
                  origin: tuple[int, int]) -> torch.Tensor:
        """The painted mask's term: the masked L1 of the upsampled maps against F0 on the fixed region's
        window, read from `feat` (a window of the block map at `origin` that holds it)."""
        box = fixed.box
        rows = slice(box.r0 - origin[0], box.r1 - origin[0])
        cols = slice(box.c0 - origin[1], box.c1 - origin[1])
        return masked_l1(self.view, feat[:, rows, cols], self._feat0(drag, box), fixed.mask, origin=box.origin)

    @staticmethod
    def _descend(drag: ActiveDrag, w: torch.Tensor, terms: list[torch.Tensor], mask_lambda: float,
                 keep: float) -> list[float]:
        """One Adam step of w on motion + mask_lambda × held + keep × kept; the three terms' values."""
        motion, held, kept = terms
        loss = motion + mask_lambda * held + keep * kept
        (grad,) = torch.autograd.grad(loss, [w], allow_unused=True)
        w.grad = torch.zeros_like(w) if grad is None else grad
        drag.optimizer.step()
        w.grad = None
        return torch.stack([t.detach() for t in terms]).tolist()

    def features(self, ws: torch.Tensor, box: Box | None = None,
                 coarse: bool = False) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
        """The feature block of ws (float32), running only the blocks up to it: the window `box` of it (None:
        whole) when windowed synthesis applies (which also skips the style gradients of the layers not
        optimised), else the whole [C, h, w] map; the origin of what is returned; with `coarse`, the keep
        term's whole coarse block (locality.py, margins cropped), else None."""
        coarse_block = self.coarse_block if coarse else None
        if self.windowed:
            return self.synthesis.features(ws, self.feature_block, box or self._whole, noise_mode=self.noise_mode,
                                           grad_layers=self.n_opt, coarse=coarse_block)
        feat, origin, coarse_map = self.synthesis.features(ws, self.feature_block, noise_mode=self.noise_mode,
                                                           coarse=coarse_block)
        assert tuple(feat.shape) == self.feature_shape, (tuple(feat.shape), self.feature_shape)
        return feat, origin, coarse_map

    def image_reach(self, points_rc: torch.Tensor) -> tuple[int, int, int, int]:
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

    def _begin_keep(self, drag: ActiveDrag, coarse: torch.Tensor, box: Box | None, targets: Sequence[Point]) -> None:
        """The keep term's F0 and mask (locality.py) for this drag: F0 is this step's coarse map at the drag's
        first step, else (a resumed drag) the same computation at w_begin; the mask from its start handles."""
        if drag.steps == 0:
            drag.keep0 = coarse.detach().clone()
        else:
            with torch.no_grad():
                drag.keep0 = self.features(self.compose(drag.w_begin), box, coarse=True)[2].detach()
        drag.keep_mask = keep_mask(tuple(drag.keep0.shape[1:]), (self.height, self.width), drag.start_handles,
                                   targets, KEEP_RADIUS * self.height).to(self.device)

    def _feat0(self, drag: ActiveDrag, need: Box) -> torch.Tensor:
        """F0, the feature map of the drag's first step, on the block window `need` (kept from the first step
        or computed once when the kept window does not hold `need`)."""
        held = drag.feat0_box
        if drag.feat0 is None or not _contains(held, need):
            _, height, width = self.feature_shape
            with torch.no_grad():
                whole = need.covers(height, width)
                feat, origin, _ = self.features(self.compose(drag.w_begin), None if whole else need)
            drag.feat0, drag.feat0_box = feat.detach(), _box_of(feat, origin)
            held = drag.feat0_box
        return drag.feat0[:, need.r0 - held.r0:need.r1 - held.r0, need.c0 - held.c0:need.c1 - held.c0]

    def _windows(self, handle_box: Box, fixed_box: Box | None) -> list[Box | None]:
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
        if self.windowed and _area(handle_box) + _area(fixed_box) <= limit:
            return [handle_box, fixed_box]
        return [None]
