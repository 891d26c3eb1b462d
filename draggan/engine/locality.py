"""Keep the rest still: DragGAN's fixed-region term with an automatic mask, on a coarse block.

Without a painted mask a drag may change anything, and it does: on the cartoon-face pairs of
`bench/drag_quality.py` the keypoints that were not dragged moved almost as far as the dragged ones
(official, 5 points, W+: 7.5 px of drift for a 10-px drag). For a drag method with a `keep_lambda`
(`methods/freedrag_local.py`) the step adds, while no mask is painted, the official masked L1 term

    keep_lambda × mean over C × h × w of |F − F0| · M

on the coarse block (`coarse_block`: the last block up to the feature block whose maps are at most
COARSE_SIZE = 32 px high), F0 being that block at the drag's first latent and M = 1 on the cells whose
centres lie farther than KEEP_RADIUS × H from every start handle → target segment (image pixels, cell
centres at ((j + ½)·W/w − ½, (i + ½)·H/h − ½)). Content away from the drag is held where it was, so the
optimiser has to move the handles along latent directions that leave it alone.

Why coarse: the blocks up to 32 × 32 are what moves faces, heads and backgrounds as a whole (the drift seen),
and they are cheap to run whole (the windowed synthesis then starts its windows above them). The block, radius
and weight were chosen on development pairs (docs/experiments.md, with the variants that did no better). The
price: a single handle whose move needs the whole face to follow (1-point drags) barely moves.
"""

from __future__ import annotations

from typing import Sequence

import torch

COARSE_SIZE = 32     # the keep term's block: the last one (up to the feature block) at most this high
KEEP_RADIUS = 0.125  # free zone around each handle → target segment, in image heights (16 px at 128)

Point = tuple[float, float]


def coarse_block(synthesis: torch.nn.Module, feature_block: int) -> int:
    """Index of the keep term's block (StyleGAN3: layer), margins excluded from the size; ≤ feature_block."""
    shapes, margins = synthesis.feature_shapes(), synthesis.feature_margins()
    fitting = [k for k in range(feature_block + 1) if shapes[k][1] - 2 * margins[k] <= COARSE_SIZE]
    return fitting[-1] if fitting else 0


def keep_mask(block_hw: tuple[int, int], image_hw: tuple[int, int], starts: Sequence[Point],
              targets: Sequence[Point], radius_px: float) -> torch.Tensor:
    """[h, w] float32, 1 on the block cells farther than radius_px from every segment starts[k] → targets[k]
    (points (x, y) in image pixels), 0 near the drag."""
    (h, w), (height, width) = block_hw, image_hw
    assert len(starts) == len(targets) and radius_px > 0
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * height / h - 0.5
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * width / w - 0.5
    cells = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)             # [h·w, (x, y)]
    nearest = torch.full((cells.shape[0],), float("inf"), dtype=torch.float64)
    for start, target in zip(starts, targets):
        a, b = torch.tensor(start, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
        ab = b - a
        t = ((cells - a) @ ab / (ab @ ab).clamp_min(1e-12)).clamp(0, 1)
        nearest = torch.minimum(nearest, torch.linalg.norm(cells - (a + t[:, None] * ab), dim=1))
    return (nearest > radius_px).reshape(h, w).to(torch.float32)


def keep_l1(feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`F.l1_loss(feat · mask, feat0 · mask)`: mean over C × h × w; feat/feat0 [C, h, w], mask [h, w]."""
    assert feat.shape == feat0.shape and feat.shape[1:] == mask.shape, (feat.shape, feat0.shape, mask.shape)
    return ((feat - feat0.detach()).abs() * mask.to(feat.device, feat.dtype)).mean()
