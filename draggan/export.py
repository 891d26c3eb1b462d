"""Export a drag edit: result PNG, latent `.npy` and GIF/MP4 of the drag.

Edit recipes (format, validation, replay) live in `draggan.recipes`; their names are re-exported here so
older imports (`from draggan.export import Recipe, load_recipe, ...`) keep working.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .recipes import (RECIPE_FORMAT, RECIPE_VERSION, SPACES, DragRecord, Recipe, RecipeError, load_recipe,
                      mask_to_rle, replay_recipe, rle_to_mask, run_drag, save_recipe)

__all__ = ["save_png", "save_latent", "mp4_available", "animation_formats", "save_animation",
           # re-exported from draggan.recipes
           "RECIPE_FORMAT", "RECIPE_VERSION", "SPACES", "DragRecord", "Recipe", "RecipeError", "load_recipe",
           "mask_to_rle", "replay_recipe", "rle_to_mask", "run_drag", "save_recipe"]


# ----------------------------------------------------------------------------------------------------------
# Images, latents, animations.

def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 [H, W, 3] image as PNG."""
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, f"bad image {image.dtype} {image.shape}"
    path = Path(path)
    Image.fromarray(image).save(path, format="PNG")
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
