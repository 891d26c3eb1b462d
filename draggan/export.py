"""Export a drag edit: result PNG, latent `.npy` and GIF/MP4 of the drag (edit recipes: `draggan.recipes`)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

__all__ = ["save_png", "save_latent", "mp4_available", "animation_formats", "save_animation"]


# ----------------------------------------------------------------------------------------------------------
# Images, latents, animations.

SOFTWARE = "DragGAN studio"
AI_GENERATED = "AI-generated"
AI_EDITED = "AI-edited"
MARK_TEXT = "AI Generated"
# IPTC digital source types: a wholly generated image, and a photo edited by a generative model.
_IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_SOURCE_TYPE = {AI_GENERATED: _IPTC + "trainedAlgorithmicMedia",
                AI_EDITED: _IPTC + "compositeWithTrainedAlgorithmicMedia"}


def _point_rows(points: Sequence[Any]) -> list[list[float]]:
    """Drag pairs as [handle_x, handle_y, target_x, target_y] rows, from rows of 4 numbers or (handle, target)."""
    rows = []
    for pair in points:
        flat = np.asarray(pair, dtype=np.float64).reshape(-1)
        if flat.size != 4:
            raise ValueError(f"a drag pair is (handle_x, handle_y, target_x, target_y), got {pair!r}")
        rows.append([int(v) if float(v).is_integer() else float(v) for v in flat])
    return rows


def png_metadata(model: str | None = None, seed: int | None = None, points: Sequence[Any] | None = None,
                 edited_photo: bool = False, upscaled_from: tuple[int, int] | None = None) -> dict[str, str]:
    """The text chunks `save_png` writes: what made the image and that it is AI-generated or AI-edited.

    Keys: `Software`, `AI` ("AI-generated", or "AI-edited" for an edited photo), `DigitalSourceType` (the IPTC
    term for the same), `Description` (one sentence), and when given `Model`, `Seed`, `Points` (JSON rows
    of [handle_x, handle_y, target_x, target_y] in the generator's image pixels) and `Upscaled` (the image is
    the generator's (width, height) image enlarged, as the app shows it; the Description says so too).
    """
    kind = AI_EDITED if edited_photo else AI_GENERATED
    what = "A photo edited" if edited_photo else "An image generated"
    text = {"Software": SOFTWARE, "AI": kind, "DigitalSourceType": _SOURCE_TYPE[kind],
            "Description": f"{what} by a generative model (StyleGAN, DragGAN point-based editing) in {SOFTWARE}."}
    if upscaled_from is not None:
        w, h = (int(v) for v in upscaled_from)
        text["Upscaled"] = f"from {w}x{h} (the generator's image), Lanczos, as the app shows it"
        text["Description"] += f" Upscaled from the generator's {w}x{h} pixels; points are in those pixels."
    if model:
        text["Model"] = str(model)
    if seed is not None:
        text["Seed"] = str(int(seed))
    if points:
        text["Points"] = json.dumps(_point_rows(points))
    return text


def add_ai_mark(image: np.ndarray, text: str = MARK_TEXT) -> np.ndarray:
    """A copy of a uint8 [H, W, 3] image with a small visible `text` label in its bottom-right corner.

    The label (white on a dark box) is about 1/24 of the image height, at least 8 px, so it stays legible
    without covering the content.
    """
    from PIL import ImageDraw, ImageFont

    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, f"bad image {image.dtype} {image.shape}"
    h, w = image.shape[:2]
    size = max(8, round(min(h, w) / 24))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:                      # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    x1, y1 = w - 1 - pad, h - 1 - pad
    x0, y0 = max(0, x1 - (right - left) - 2 * pad), max(0, y1 - (bottom - top) - 2 * pad)
    draw.rectangle((x0, y0, x1, y1), fill=(0, 0, 0))
    draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255))
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str | os.PathLike, *, model: str | None = None, seed: int | None = None,
             points: Sequence[Any] | None = None, edited_photo: bool = False, mark: bool | None = None,
             upscaled_from: tuple[int, int] | None = None) -> Path:
    """Write a uint8 [H, W, 3] image as PNG that says what it is.

    The PNG carries `png_metadata(model, seed, points, edited_photo, upscaled_from)` as text chunks: the
    latter, (width, height), when `image` is the generator's image enlarged (as the app shows a small model's).
    `mark` stamps a visible "AI Generated" label (`add_ai_mark`) at the written size; by default it is on for
    edited photos and off for generated images.
    """
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, f"bad image {image.dtype} {image.shape}"
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if edited_photo if mark is None else mark:
        image = add_ai_mark(image)
    info = PngInfo()
    for key, value in png_metadata(model, seed, points, edited_photo, upscaled_from).items():
        info.add_itxt(key, value)
    Image.fromarray(image).save(path, format="PNG", pnginfo=info)
    return path


def save_latent(ws: Any, path: str | os.PathLike) -> Path:
    """Write a latent [1, num_ws, w_dim] (tensor or array) as float32 `.npy`."""
    arr = ws.detach().cpu().numpy() if hasattr(ws, "detach") else np.asarray(ws)
    assert arr.ndim == 3 and arr.shape[0] == 1, f"latent must be [1, num_ws, w_dim], got {arr.shape}"
    path = Path(path)
    np.save(path, arr.astype(np.float32))
    return path


def mp4_available() -> bool:
    """True when imageio can write MP4 (it needs the `imageio-ffmpeg` package and its ffmpeg binary)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def animation_formats() -> tuple[str, ...]:
    """Animation formats this installation can write."""
    return ("gif", "mp4") if mp4_available() else ("gif",)


def save_animation(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write uint8 [H, W, 3] frames as an animated GIF (loops forever) or an MP4, chosen by suffix.

    MP4 raises `RuntimeError` when no ffmpeg backend is installed (`pip install imageio-ffmpeg`).
    """
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError("no frames to write: run a drag first")
    shape = frames[0].shape
    assert len(shape) == 3 and shape[2] == 3, f"frames must be [H, W, 3], got {shape}"
    if any(f.shape != shape for f in frames):
        raise ValueError("all frames must have the same size")
    stack = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        iio.imwrite(path, stack, extension=".gif", duration=int(round(1000.0 / fps)), loop=0)
    elif suffix == ".mp4":
        if not mp4_available():
            raise RuntimeError("MP4 export needs an ffmpeg backend: pip install imageio-ffmpeg (GIF works without)")
        iio.imwrite(path, stack, plugin="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=2)
    else:
        raise ValueError(f"unsupported animation format {suffix!r}; use .gif or .mp4")
    return path
