"""Draw the editor's overlay: numbered handle/target pairs with arrows, and the mask tint.

Generator images are small (a tiny test model is 64 px, real ones 256–1024 px) while the browser never
scales an image above its natural size, so the display image is an integer upscale of the generator image
(`display_scale`). Points live in whole generator pixels everywhere else (a click picks the pixel under the
cursor); `to_display` (to the centre of that pixel's block) and `from_display` are the only conversions.

Masks live in generator pixels too. `upscale_mask` shows one at display size with smooth edges (bilinear, then
cut at one half: no stair-steps of whole blocks; the tint on the Points view is also antialiased), and `sample_mask` reads a display-size mask back at the centre
pixel of each block; the two are exact inverses (a block centre lies within 0.5/scale px of the generator pixel
centre, where the bilinear value is above one half exactly when that pixel is set).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Point = tuple[float, float]

DISPLAY_MIN_SIZE = 512
HANDLE_COLOR = (230, 40, 40)
TARGET_COLOR = (40, 90, 235)
ARROW_COLOR = (255, 255, 255)
DONE_COLOR = (150, 150, 150)     # the points of a drag that arrived
FIXED_TINT = (255, 70, 70)       # area that must not change
FLEXIBLE_TINT = (60, 200, 90)    # area allowed to change


def display_scale(height: int, width: int, min_size: int = DISPLAY_MIN_SIZE) -> int:
    """Integer upscale factor so that the longer side is shown at `min_size` px or more."""
    assert height > 0 and width > 0
    return max(1, min_size // max(height, width))


def to_display(point: Point, scale: int) -> Point:
    """Generator pixel (x, y) → display pixel; pixel centres map onto pixel centres."""
    return ((point[0] + 0.5) * scale - 0.5, (point[1] + 0.5) * scale - 0.5)


def from_display(point: Point, scale: int) -> Point:
    """Display pixel (x, y) (as reported by a click) → the generator pixel whose block contains it."""
    return (float(math.floor(point[0] / scale)), float(math.floor(point[1] / scale)))


def upscale_mask(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A bool [h, w] mask as a binary "L" image of `size` (width, height) with smooth edges (see module doc)."""
    assert mask.ndim == 2, f"mask must be [H, W], got {mask.shape}"
    m = Image.fromarray((mask > 0.5).astype(np.uint8) * 255)
    if m.size == tuple(size):
        return m
    return m.resize(size, Image.BILINEAR).point(lambda v: 255 if v >= 128 else 0)


def sample_mask(display: np.ndarray, height: int, width: int) -> np.ndarray:
    """A display-size bool mask read back at generator size: the pixel at the centre of each block."""
    scale = max(1, display.shape[1] // width)
    if display.shape[:2] != (height * scale, width * scale):
        img = Image.fromarray(display.astype(np.uint8) * 255).resize((width * scale, height * scale), Image.NEAREST)
        display = np.asarray(img) > 127
    return display[scale // 2::scale, scale // 2::scale][:height, :width].copy()


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _arrow(draw: ImageDraw.ImageDraw, start: Point, end: Point, width: int, color: tuple[int, int, int]) -> None:
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length < 1e-6:
        return
    draw.line([start, end], fill=color, width=width)
    head = min(4.0 * width + 4.0, length * 0.5)
    ux, uy = dx / length, dy / length
    left = (end[0] - head * ux + 0.5 * head * uy, end[1] - head * uy - 0.5 * head * ux)
    right = (end[0] - head * ux - 0.5 * head * uy, end[1] - head * uy + 0.5 * head * ux)
    draw.polygon([end, left, right], fill=color)


def tint_mask(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.35) -> Image.Image:
    """Blend `color` over the pixels of `image` where the [h, w] `mask` is set (resized to the image), and
    outline the region in `color` so it stays visible on images of a similar hue."""
    assert mask.ndim == 2, f"mask must be [H, W], got {mask.shape}"
    scale = image.size[0] / mask.shape[1]
    soft = upscale_mask(mask, image.size).filter(ImageFilter.GaussianBlur(max(0.8, 0.4 * scale)))
    base = image.convert("RGB")
    layer = Image.new("RGB", base.size, color)
    base.paste(Image.blend(base, layer, alpha), (0, 0), soft)           # antialiased fill
    v = np.asarray(soft).astype(np.int32)
    edge = np.clip(255 - np.abs(v - 128) * 3, 0, 255).astype(np.uint8)  # a soft line along the contour
    base.paste(layer, (0, 0), Image.fromarray(edge))
    return base


def render_overlay(image: np.ndarray, handles: Sequence[Point], targets: Sequence[Point],
                   fixed_mask: np.ndarray | None = None, flexible_mask: np.ndarray | None = None,
                   show_mask: bool = True, scale: int | None = None, done: bool = False) -> Image.Image:
    """Upscale a generator image [H, W, 3] uint8 and draw masks, arrows and numbered points on it.

    `handles` may hold one more point than `targets` (a handle waiting for its target). `done` draws the points
    grey with a check mark: their drag arrived.
    """
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, \
        f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}"
    assert len(targets) <= len(handles) <= len(targets) + 1, "points must alternate handle, target"
    h, w = image.shape[:2]
    s = display_scale(h, w) if scale is None else scale
    out = Image.fromarray(image).resize((w * s, h * s), Image.LANCZOS if s > 1 else Image.NEAREST)
    if show_mask:
        if flexible_mask is not None and flexible_mask.any():
            out = tint_mask(out, flexible_mask, FLEXIBLE_TINT)
        if fixed_mask is not None and fixed_mask.any():
            out = tint_mask(out, fixed_mask, FIXED_TINT)
    draw = ImageDraw.Draw(out)
    size = max(w * s, h * s)
    radius = max(4.0, size / 90.0)
    line = max(2, int(round(size / 300.0)))
    font = _font(int(radius * 2.2))
    for i, handle in enumerate(handles):
        p = to_display(handle, s)
        if i < len(targets):
            _arrow(draw, p, to_display(targets[i], s), line, ARROW_COLOR)
    for i, handle in enumerate(handles):
        pairs = [(to_display(handle, s), DONE_COLOR if done else HANDLE_COLOR)]
        if i < len(targets):
            pairs.append((to_display(targets[i], s), DONE_COLOR if done else TARGET_COLOR))
        for (x, y), color in pairs:
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255),
                         width=max(1, line // 2))
        x, y = pairs[0][0]
        draw.text((x + radius + 2, y - radius - 2), str(i + 1), fill=(255, 255, 255), font=font,
                  stroke_width=2, stroke_fill=(0, 0, 0))
        if done:
            _check(draw, pairs[-1][0], radius, line)
    return out


def _check(draw: ImageDraw.ImageDraw, centre: Point, radius: float, width: int) -> None:
    """A check mark drawn over a point."""
    x, y = centre
    r = radius * 0.7
    tick = [(x - r, y), (x - r * 0.3, y + r * 0.7), (x + r, y - r * 0.7)]
    draw.line(tick, fill=(0, 0, 0), width=width + 2, joint="curve")
    draw.line(tick, fill=(255, 255, 255), width=max(1, width), joint="curve")
