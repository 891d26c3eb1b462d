"""The masked L1 of a bilinear upsampling by integer factors, computed on the block map's phases.

With integer factors (s_y, s_x), `F.interpolate(mode='bilinear', align_corners=False)` maps image pixel
(s_y·i + p, s_x·j + q) to source (i + λ_p, j + λ_q), λ_p = (p + 0.5)/s − 0.5 ∈ (−½, ½): every output pixel of
phase (p, q) is the same two-step blend of block pixel (i, j) with its row neighbour i ± 1 (weight |λ_p|, the
sign of λ_p choosing the neighbour) and then with its column neighbour j ± 1 (weight |λ_q|); neighbours
outside the map clamp to the edge. So the upsampled map is s_y·s_x phase images, each the size of the block
map, made of shifted block maps by elementwise blends (`torch.lerp`): no image-size map, no gather, no
resampling kernel — a few vectorised passes per output value.

`phase_l1(diff, mask, ...)` = Σ over image pixels of |mask| · Σ_c |up(diff)_c|, and when asked its
gradient with respect to `diff` — the adjoint blends of sign(up)·|mask| (sign(0) = 0), applied phase by
phase. The sum is positively homogeneous of degree 1 in `diff`, so it equals ⟨gradient, diff⟩ (Euler), which
gives the value from the block-size gradient without another pass over the phases. Work is done in chunks of
channels so each phase image stays cache-sized; sums are accumulated per chunk in float64.
"""

from __future__ import annotations

import torch

PHASE_ELEMS = 1 << 18  # values per phase image of one channel chunk (1 MiB of float32)


def phase_weights(scale: int) -> list[tuple[float, int]]:
    """Per phase p of a factor `scale`: (|λ_p|, the neighbour's offset −1 or +1)."""
    out = []
    for p in range(scale):
        lam = (p + 0.5) / scale - 0.5
        out.append((abs(lam), -1 if lam < 0 else 1))
    return out


def phase_l1(feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor, rows: tuple[int, int],
             cols: tuple[int, int], scale: tuple[int, int], origin: tuple[int, int],
             want_grad: bool, chunk_elems: int = PHASE_ELEMS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Σ |mask| · |up(diff)| over block rows [rows) × columns [cols) of the map, its gradient or None), where
    diff = feat − feat0 (formed chunk by chunk: no map-sized difference is built).

    feat/feat0: [C, h, w] the same window of two block maps, its first row/column `origin`; it must
    hold both taps of every image pixel with a non-zero mask. mask: [s_y·(rows[1] − rows[0]),
    s_x·(cols[1] − cols[0])] weights of the image pixels of those block rows/columns (zero outside the
    region). `chunk_elems` bounds one chunk's phase image on the CPU. The value is a float64 scalar tensor on
    feat's device (no host sync); the gradient (with respect to feat) has feat's shape.
    """
    (sy, sx), (a, b), (c, d) = scale, rows, cols
    nb, nc = b - a, d - c
    assert mask.shape == (sy * nb, sx * nc), (tuple(mask.shape), (sy * nb, sx * nc))
    assert feat.shape == feat0.shape
    channels, win_h, win_w = feat.shape
    # Block rows a − 1 .. b and columns c − 1 .. d (one neighbour each side), clamped to the window: at the map
    # border that is the clamp rule itself; elsewhere only pixels of zero mask read beyond the window.
    halo = _Halo.of((a - 1 - origin[0], b + 1 - origin[0]), (c - 1 - origin[1], d + 1 - origin[1]), (win_h, win_w))
    weights = mask.abs().reshape(nb, sy, nc, sx).permute(1, 3, 0, 2).contiguous()  # [sy, sx, nb, nc]
    ones = bool((weights == 1).all())
    row_phases, col_phases = phase_weights(sy), phase_weights(sx)
    grad = torch.zeros_like(feat) if want_grad else None
    chunk = max(1, chunk_elems // (nb * nc)) if feat.device.type == "cpu" else channels
    total = feat.new_zeros([], dtype=torch.float64)
    for c0 in range(0, channels, chunk):
        part = halo.read(feat[c0:c0 + chunk], feat0[c0:c0 + chunk])  # diff, [k, nb + 2, nc + 2]
        k = part.shape[0]
        blend = part.new_empty([k, nb, nc + 2])
        up = part.new_empty([k, nb, nc])
        sign = torch.empty_like(up)
        g_part = torch.zeros_like(part) if want_grad else None
        g_blend = part.new_empty([k, nb, nc + 2]) if want_grad else None
        for p, (ty, dy) in enumerate(row_phases):
            torch.lerp(part[:, 1:nb + 1], part[:, 1 + dy:nb + 1 + dy], ty, out=blend)
            if want_grad:
                g_blend[:, :, 0].zero_()
                g_blend[:, :, nc + 1].zero_()
            for q, (tx, dx) in enumerate(col_phases):
                torch.lerp(blend[:, :, 1:nc + 1], blend[:, :, 1 + dx:nc + 1 + dx], tx, out=up)
                torch.sign(up, out=sign)
                if not ones:
                    sign.mul_(weights[p, q])
                if not want_grad:
                    total += torch.dot(sign.view(-1), up.view(-1)).double()
                    continue
                if q == 0:
                    torch.mul(sign, 1 - tx, out=g_blend[:, :, 1:nc + 1])
                else:
                    g_blend[:, :, 1:nc + 1].add_(sign, alpha=1 - tx)
                g_blend[:, :, 1 + dx:nc + 1 + dx].add_(sign, alpha=tx)
            if want_grad:
                g_part[:, 1:nb + 1].add_(g_blend, alpha=1 - ty)
                g_part[:, 1 + dy:nb + 1 + dy].add_(g_blend, alpha=ty)
        if want_grad:
            total += torch.dot(g_part.view(-1), part.view(-1)).double()
            halo.add_adjoint(grad[c0:c0 + k], g_part)
    return total, grad


class _Halo:
    """A block window with one neighbour row/column each side, read from a feature window where it lies
    inside and replicated from the window's edge where it does not (a clamped index), and the adjoint."""

    def __init__(self, rows: tuple[int, int], cols: tuple[int, int], pad: tuple[int, int, int, int]) -> None:
        self.rows, self.cols = rows, cols  # source rows/columns [lo, hi) inside the window
        self.top, self.bottom, self.left, self.right = pad

    @staticmethod
    def of(rows: tuple[int, int], cols: tuple[int, int], window_hw: tuple[int, int]) -> "_Halo":
        """Rows/columns [lo, hi) in window coordinates, at most one beyond each window edge."""
        top, bottom = int(rows[0] < 0), int(rows[1] > window_hw[0])
        left, right = int(cols[0] < 0), int(cols[1] > window_hw[1])
        assert rows[0] >= -1 and cols[0] >= -1 and rows[1] <= window_hw[0] + 1 and cols[1] <= window_hw[1] + 1
        return _Halo((rows[0] + top, rows[1] - bottom), (cols[0] + left, cols[1] - right), (top, bottom, left, right))

    def _inner(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, self.top:t.shape[1] - self.bottom, self.left:t.shape[2] - self.right]

    def read(self, feat: torch.Tensor, feat0: torch.Tensor) -> torch.Tensor:
        """The halo of feat − feat0."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        out = feat.new_empty([feat.shape[0], r1 - r0 + self.top + self.bottom, c1 - c0 + self.left + self.right])
        torch.sub(feat[:, r0:r1, c0:c1], feat0[:, r0:r1, c0:c1], out=self._inner(out))
        inner_rows = slice(self.top, out.shape[1] - self.bottom)
        if self.left:
            out[:, inner_rows, 0] = out[:, inner_rows, 1]
        if self.right:
            out[:, inner_rows, -1] = out[:, inner_rows, -2]
        if self.top:
            out[:, 0] = out[:, 1]
        if self.bottom:
            out[:, -1] = out[:, -2]
        return out

    def add_adjoint(self, grad: torch.Tensor, g: torch.Tensor) -> None:
        """grad (the window) += the adjoint of `read` applied to g (g is modified)."""
        if self.bottom:
            g[:, -2] += g[:, -1]
        if self.top:
            g[:, 1] += g[:, 0]
        inner_rows = slice(self.top, g.shape[1] - self.bottom)
        if self.right:
            g[:, inner_rows, -2] += g[:, inner_rows, -1]
        if self.left:
            g[:, inner_rows, 1] += g[:, inner_rows, 0]
        (r0, r1), (c0, c1) = self.rows, self.cols
        grad[:, r0:r1, c0:c1] += self._inner(g)
