"""The masked L1 of a bilinear upsampling by integer factors, computed on the block map, not the image.

With integer factors (s_y, s_x), `F.interpolate(mode='bilinear', align_corners=False)` maps image pixel
(s_y·i + p, s_x·j + q) to source (i + λ_p, j + λ_q), λ_p = (p + 0.5)/s − 0.5 ∈ (−½, ½); neighbours outside
the map clamp to the edge. `phase_l1` = Σ over image pixels of |mask| · Σ_c |up(diff)_c| and its gradient
with respect to diff, the adjoint of the upsampling applied to sign(up)·|mask| (sign(0) = 0), two ways:

- phases: every output pixel of phase (p, q) is the same two-step blend of block pixel (i, j) with its row
  neighbour i ± 1 (weight |λ_p|, the sign of λ_p choosing the neighbour), then with its column neighbour
  j ± 1 (weight |λ_q|). The upsampled map is s_y·s_x phase images of the block map's size, made by
  elementwise blends (`torch.lerp`) of shifted block maps: a few vectorised passes per output value.
- cells: the pixels whose source lies in the cell between block pixels (i, j) and (i + 1, j + 1) blend its
  four corners with the same non-negative weights (summing to 1) in every cell. Where the four
  corners of a channel have one strict sign σ (or are all zero, σ = 0), every such pixel has sign σ, so
  |up| = σ·up is linear there: the cell adds σ·Σ_corners diff·M_corner, M_corner = Σ over its pixels of
  |mask| × the corner's weight (per mask, for all channels), and its gradient is σ·M_corner — block-size
  work. Only the other ("mixed") cells, about a tenth on drag differences, have their pixels computed, as
  one small matrix product of their gathered corners. Used on the CPU while few cells are mixed, and only
  where a cell holds several pixels: at factor 1 (a feature block of the image's size, as in the bundled
  128-px models) the phase form is one sign pass, and most cells of a drag difference are mixed there, so
  trying the cells first cost 8× the term.

The sum is positively homogeneous of degree 1 in diff, so it equals ⟨gradient, diff⟩ (Euler): the value
comes from the block-size gradient. Work is done in chunks of channels (phase images cache-sized), sums
accumulated per chunk in float64.
"""

from __future__ import annotations

import torch

PHASE_ELEMS = 1 << 18  # values per phase image of one channel chunk (1 MiB of float32)
MIXED_MAX = 0.35       # above this share of mixed cells in a chunk the phases are cheaper than the cells


def phase_weights(scale: int) -> list[tuple[float, int]]:
    """Per phase p of a factor `scale`: (|λ_p|, the neighbour's offset −1 or +1)."""
    out = []
    for p in range(scale):
        lam = (p + 0.5) / scale - 0.5
        out.append((abs(lam), -1 if lam < 0 else 1))
    return out


def phase_l1(feat: torch.Tensor, feat0: torch.Tensor, mask: torch.Tensor, rows: tuple[int, int],
             cols: tuple[int, int], scale: tuple[int, int], origin: tuple[int, int],
             want_grad: bool, chunk_elems: int = PHASE_ELEMS, cells: bool | None = None,
             plan: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Σ |mask| · |up(diff)| over block rows [rows) × columns [cols) of the map, its gradient or None), where
    diff = feat − feat0 (formed chunk by chunk: no map-sized difference is built).

    feat/feat0: [C, h, w] the same window of two block maps, its first row/column `origin`; it must
    hold both taps of every image pixel with a non-zero mask. mask: [s_y·(rows[1] − rows[0]),
    s_x·(cols[1] − cols[0])] weights of the image pixels of those block rows/columns (zero outside the
    region). `chunk_elems` bounds one chunk's phase image on the CPU. `cells`: use the cell form (True),
    the phases (False), or the cells where few are mixed on the CPU and the phases elsewhere (None: on
    other devices all channels at once, no host sync). `plan`: the device type whose plan to follow, "cpu"
    (chunks, cells where few are mixed, the mask product skipped for an all-ones mask) or any other (one
    chunk, phases); by default feat's device type, so the CPU can run the GPU plan. The value is a float64
    scalar tensor on feat's device; the gradient (with respect to feat) has feat's shape.
    """
    (sy, sx), (a, b), (c, d) = scale, rows, cols
    nb, nc = b - a, d - c
    assert mask.shape == (sy * nb, sx * nc), (tuple(mask.shape), (sy * nb, sx * nc))
    assert feat.shape == feat0.shape
    channels, win_h, win_w = feat.shape
    cpu = (feat.device.type if plan is None else plan) == "cpu"
    # Block rows a − 1 .. b and columns c − 1 .. d (one neighbour each side), clamped to the window: at the map
    # border that is the clamp rule itself; elsewhere only pixels of zero mask read beyond the window.
    halo = _Halo.of((a - 1 - origin[0], b + 1 - origin[0]), (c - 1 - origin[1], d + 1 - origin[1]), (win_h, win_w))
    weights = mask.abs().reshape(nb, sy, nc, sx).permute(1, 3, 0, 2).contiguous()  # [sy, sx, nb, nc]
    phases = _Phases(weights, cpu)
    table = _Cells.of(weights) if cells or (cells is None and cpu and sy * sx > 1) else None
    grad = torch.zeros_like(feat) if want_grad else None
    chunk = max(1, chunk_elems // (nb * nc)) if cpu else channels
    total = feat.new_zeros([], dtype=torch.float64)
    scratch = _Scratch(feat)
    for c0 in range(0, channels, chunk):
        part = halo.read(feat[c0:c0 + chunk], feat0[c0:c0 + chunk], scratch)  # diff, [k, nb + 2, nc + 2]
        g_part = None if table is None else table.gradient(part, scratch, always=bool(cells))
        if g_part is None:
            g_part = phases.gradient(part, scratch)
        total += torch.dot(g_part.view(-1), part.view(-1)).double()
        if want_grad:
            halo.add_adjoint(grad[c0:c0 + part.shape[0]], g_part)
    return total, grad


class _Phases:
    """The phase form (module docstring) for one mask: the gradient of a chunk's sum."""

    def __init__(self, weights: torch.Tensor, cpu: bool) -> None:
        self.weights = weights  # |mask| by phase, [sy, sx, nb, nc]
        self.ones = cpu and bool((weights == 1).all())  # skip the mask product (a host sync: CPU plan only)
        self.row_phases, self.col_phases = phase_weights(weights.shape[0]), phase_weights(weights.shape[1])

    def gradient(self, part: torch.Tensor, scratch: "_Scratch") -> torch.Tensor:
        """Gradient [k, nb + 2, nc + 2] of Σ |mask|·|up| with respect to the halo `part` of diff."""
        k, nb, nc = part.shape[0], part.shape[1] - 2, part.shape[2] - 2
        blend_buf = scratch.get("blend", [k, nb, nc + 2])
        up = scratch.get("up", [k, nb, nc])
        sign = scratch.get("sign", [k, nb, nc])
        g_part = scratch.get("g_part", part.shape).zero_()
        g_blend = scratch.get("g_blend", [k, nb, nc + 2])
        for p, (ty, dy) in enumerate(self.row_phases):
            blend = part[:, 1:nb + 1]               # a phase of weight 0 (odd factors) is the block row itself
            if ty:
                blend = torch.lerp(blend, part[:, 1 + dy:nb + 1 + dy], ty, out=blend_buf)
            g_blend[:, :, 0].zero_()
            g_blend[:, :, nc + 1].zero_()
            for q, (tx, dx) in enumerate(self.col_phases):
                if tx:
                    torch.lerp(blend[:, :, 1:nc + 1], blend[:, :, 1 + dx:nc + 1 + dx], tx, out=up)
                torch.sign(up if tx else blend[:, :, 1:nc + 1], out=sign)
                if not self.ones:
                    sign.mul_(self.weights[p, q])
                if q == 0:
                    torch.mul(sign, 1 - tx, out=g_blend[:, :, 1:nc + 1])
                else:
                    g_blend[:, :, 1:nc + 1].add_(sign, alpha=1 - tx)
                if tx:
                    g_blend[:, :, 1 + dx:nc + 1 + dx].add_(sign, alpha=tx)
            g_part[:, 1:nb + 1].add_(g_blend, alpha=1 - ty)
            if ty:
                g_part[:, 1 + dy:nb + 1 + dy].add_(g_blend, alpha=ty)
        return g_part


def _cell_slots(scale: int) -> list[tuple[int, int, float]]:
    """Per phase p: (δ, slot, f) — its pixels lie in cell i + δ of block row i (cells indexed by their upper
    halo row), at in-cell position `slot`, with weight f on the cell's lower corner row."""
    ordered = [p for p, (_, side) in enumerate(phase_weights(scale)) if side > 0] + \
        [p for p, (_, side) in enumerate(phase_weights(scale)) if side < 0]
    out = []
    for p, (t, side) in enumerate(phase_weights(scale)):
        out.append((1, ordered.index(p), t) if side > 0 else (0, ordered.index(p), 1 - t))
    return out


class _Cells:
    """The cell form (module docstring) for one mask: per-cell corner weights M and per-pixel |mask|.

    A cell is named by its upper-left corner in the halo grid [nb + 2, nc + 2] (the last row and column name
    no cell), so the flat index of a mixed cell in a chunk's [k, nb + 2, nc + 2] flags is the flat index of
    that corner in the chunk's halo: no index arithmetic per cell."""

    def __init__(self, corner_weights: torch.Tensor, pixel_weights: torch.Tensor, blend: torch.Tensor) -> None:
        height, width = corner_weights.shape[1] + 1, corner_weights.shape[2] + 1
        self.corner_weights = corner_weights  # [4, nb + 1, nc + 1]: corners (0,0), (0,1), (1,0), (1,1)
        self.blend = blend                    # [4, sy·sx]: each corner's weight at each in-cell pixel
        grid = pixel_weights.new_zeros([height, width, pixel_weights.shape[1]])
        grid[:-1, :-1] = pixel_weights.view(height - 1, width - 1, -1)
        self.pixel_weights = grid.view(height * width, -1)       # [(nb + 2)·(nc + 2), sy·sx]
        self.full = (self.pixel_weights == 1).all(dim=1)        # every pixel of the cell has weight 1
        self.weighted = (corner_weights != 0).any(dim=0)         # [nb + 1, nc + 1]: some pixel of the cell counts

    @staticmethod
    def of(weights: torch.Tensor) -> "_Cells":
        sy, sx, nb, nc = weights.shape
        rows, cols = _cell_slots(sy), _cell_slots(sx)
        pixels = weights.new_zeros([nb + 1, nc + 1, sy, sx])
        fy = weights.new_zeros([sy])
        fx = weights.new_zeros([sx])
        for p, (dy, u, f) in enumerate(rows):
            fy[u] = f
            for q, (dx, v, g) in enumerate(cols):
                fx[v] = g
                pixels[dy:dy + nb, dx:dx + nc, u, v] = weights[p, q]
        blend = torch.stack([torch.outer(1 - fy, 1 - fx), torch.outer(1 - fy, fx), torch.outer(fy, 1 - fx),
                             torch.outer(fy, fx)]).reshape(4, sy * sx)
        pixels = pixels.reshape((nb + 1) * (nc + 1), sy * sx)
        corner_weights = (pixels @ blend.t()).t().reshape(4, nb + 1, nc + 1).contiguous()
        return _Cells(corner_weights, pixels, blend)

    def gradient(self, part: torch.Tensor, scratch: "_Scratch", always: bool = False) -> torch.Tensor | None:
        """Gradient [k, nb + 2, nc + 2] of Σ |mask|·|up| with respect to the halo `part` of diff; None when more
        than MIXED_MAX of the cells are mixed (unless `always`)."""
        k, height, width = part.shape
        cell_shape = [k, height - 1, width - 1]
        sign = torch.sign(part, out=scratch.get("sign", part.shape))
        total = torch.add(sign[:, :-1, :-1], sign[:, :-1, 1:], out=scratch.get("total", cell_shape))
        total += sign[:, 1:, :-1]
        total += sign[:, 1:, 1:]
        nonzero = sign.abs_()
        count = torch.add(nonzero[:, :-1, :-1], nonzero[:, :-1, 1:], out=scratch.get("count", cell_shape))
        count += nonzero[:, 1:, :-1]
        count += nonzero[:, 1:, 1:]
        sigma = total.div_(4, rounding_mode="trunc")  # ±1 where all four share a strict sign, else 0
        flags = torch.zeros(part.shape, dtype=torch.bool, device=part.device)
        cells = flags[:, :-1, :-1]
        torch.logical_and(sigma == 0, count != 0, out=cells)
        cells &= self.weighted
        base = torch.nonzero(flags.view(-1)).flatten()  # mixed cells = their upper-left corners in part
        if not always and base.numel() > MIXED_MAX * sigma.numel():
            return None
        g_part = scratch.get("g_part", part.shape).zero_()
        for corner, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            g_part[:, r:height - 1 + r, c:width - 1 + c].addcmul_(sigma, self.corner_weights[corner])
        if base.numel():
            index = torch.stack([base, base + 1, base + width, base + width + 1], dim=1)  # [M, 4]
            cell = base % (height * width)
            count = index.shape[0]
            corners = torch.index_select(part.view(-1), 0, index.view(-1), out=scratch.get("corners", [4 * count]))
            pixels = scratch.get("pixels", [count, self.blend.shape[1]])
            signs = torch.mm(corners.view(count, 4), self.blend, out=pixels).sign_()  # the cells' pixels' signs
            partial = torch.nonzero(~self.full[cell]).flatten()                 # cells not wholly of weight 1
            if partial.numel():
                signs.index_copy_(0, partial, signs.index_select(0, partial)
                                  * self.pixel_weights.index_select(0, cell.index_select(0, partial)))
            back = torch.mm(signs, self.blend.t(), out=scratch.get("back", [count, 4]))
            g_part.view(-1).index_add_(0, index.view(-1), back.view(-1))
        return g_part


class _Scratch:
    """Float buffers reused by every chunk of one call, one per name, viewed at the shape asked for: fresh
    chunk-sized tensors would fault in new pages each time, which costs about as much as the arithmetic."""

    def __init__(self, like: torch.Tensor) -> None:
        self.like = like
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape) -> torch.Tensor:
        numel = 1
        for n in shape:
            numel *= int(n)
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = self.buffers[name] = self.like.new_empty([numel])
        return buf[:numel].view(*shape)


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

    def read(self, feat: torch.Tensor, feat0: torch.Tensor, scratch: "_Scratch") -> torch.Tensor:
        """The halo of feat − feat0 (in scratch memory)."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        out = scratch.get("part", [feat.shape[0], r1 - r0 + self.top + self.bottom, c1 - c0 + self.left + self.right])
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
