"""StyleGAN2 feature blocks computed only on a window (`SynthesisNetwork.features` with a box).

Without a mask, a drag step reads the feature block only near the handles (tracking window, motion
supervision disk). Every operation of a StyleGAN2 synthesis block is local — modulated 3×3 convolutions
(the modulation and demodulation depend on the styles, not on the position), the FIR upsampling filter,
constant noise, bias and activation — so the block's output on a window equals the full computation when
the block runs on a large-enough window of its input, with the matching window of its constant noise.
Going down the network, windows halve until one covers its whole map; the blocks below run in full.
At the map border a window's zero padding is the network's own padding, so clipped windows stay exact.
"""

from __future__ import annotations

import torch

from .generator import Box
from .ops import conv2d_resample


def block_margin(block: torch.nn.Module) -> int:
    """Output pixels at each side of a windowed block's output that the window's edge corrupts.

    Measured on the block's own up-sampling convolution: with all-ones weights (no cancellation) the
    response to one input pixel at row c spans output rows [2c + lo, 2c + hi], so an input window [a, b)
    gives exact outputs [2a + hi − 1, 2b + lo); the block's second convolution widens that by (k − 1) / 2.
    """
    k = block.conv0.weight.shape[-1]
    size = 4 * k + 8
    impulse = torch.zeros([1, 1, size, size])
    impulse[0, 0, size // 2, size // 2] = 1
    response = conv2d_resample(impulse, torch.ones([1, 1, k, k]), f=block.resample_filter.cpu(), up=2,
                               padding=k // 2, flip_weight=False)
    rows = torch.nonzero(response[0, 0].abs().sum(dim=1) > 0).flatten()
    lo, hi = int(rows[0]) - size, int(rows[-1]) - size
    return max(hi - 1, -lo, 0) + (k - 1) // 2


def plan(synthesis: torch.nn.Module, block: int, box: Box) -> list[tuple[int, Box, Box]]:
    """(block, input window, output window) for each block computed on a window to give `box` of block
    `block`'s map, lowest first; the blocks below the first run whole."""
    shapes = synthesis.feature_shapes()
    windows = []
    need = box
    for k in range(block, 0, -1):
        margin = synthesis.window_margin(k)
        _, in_h, in_w = shapes[k - 1]
        window = Box(r0=max((need.r0 - margin) // 2, 0), r1=min(-((-need.r1 - margin) // 2), in_h),
                     c0=max((need.c0 - margin) // 2, 0), c1=min(-((-need.c1 - margin) // 2), in_w))
        if window.covers(in_h, in_w):
            break
        windows.append((k, window, need))
        need = window
    return windows[::-1]


def windowed_features(synthesis: torch.nn.Module, ws: torch.Tensor, block: int, box: Box, noise_mode: str,
                      grad_layers: int | None, coarse: int | None
                      ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None]:
    """`synthesis(ws, until_block=block)`'s last map on the window `box` (clipped to the map), float32
    [C, rows, cols], its origin, and block `coarse`'s whole map (None when not asked; blocks up to it then
    run whole). `grad_layers`: only style layers below it need gradients; blocks whose layers all lie above
    it read a detached `ws`, so the backward computes no style gradients there."""
    assert noise_mode in ("const", "none"), "windows need deterministic noise"
    assert coarse is None or 0 <= coarse <= block
    blocks = [getattr(synthesis, f"b{res}") for res in synthesis.block_resolutions[:block + 1]]
    _, height, width = synthesis.feature_shapes()[block]
    box = Box(max(box.r0, 0), min(box.r1, height), max(box.c0, 0), min(box.c1, width))
    windows = {k: (window, out) for k, window, out in plan(synthesis, block, box) if coarse is None or k > coarse}
    coarse_map = None
    ws = ws.to(torch.float32)
    frozen = ws.detach()
    x = None
    current = None
    ws_start = 0
    for k, blk in enumerate(blocks):
        source = frozen if grad_layers is not None and ws_start >= grad_layers else ws
        cur_ws = source.narrow(1, ws_start, blk.num_conv + blk.num_torgb)
        ws_start += blk.num_conv
        if k not in windows:
            x, _ = blk(x, None, cur_ws, noise_mode=noise_mode, fused_modconv=False, skip_rgb=True)
            current = Box(0, x.shape[2], 0, x.shape[3])
            if k == coarse:
                coarse_map = x[0].to(torch.float32)
            continue
        window, out = windows[k]
        x = x[:, :, window.r0 - current.r0:window.r1 - current.r0, window.c0 - current.c0:window.c1 - current.c0]
        rows = slice(2 * window.r0, 2 * window.r1)
        cols = slice(2 * window.c0, 2 * window.c1)
        noise = {name: getattr(blk, name).noise_const[rows, cols] for name in ("conv0", "conv1")
                 if getattr(blk, name).use_noise}
        x, _ = blk(x, None, cur_ws, noise_mode=noise_mode, fused_modconv=False, skip_rgb=True, noise_bufs=noise)
        x = x[:, :, out.r0 - rows.start:out.r1 - rows.start, out.c0 - cols.start:out.c1 - cols.start]
        current = out
    x = x[:, :, box.r0 - current.r0:box.r1 - current.r0, box.c0 - current.c0:box.c1 - current.c0]
    return x[0].to(torch.float32), box.origin, coarse_map
