"""Export a drag edit: result PNG, latent `.npy`, GIF/MP4 of the drag, and a replayable "edit recipe".

A recipe is a small JSON document that names the model, the start latent (seed, ψ, space) and every drag
that produced the current image (points, fixed-area mask as run-length encoding, step size, mask λ,
number of optimisation steps). `replay_recipe` rebuilds the edit by running the same drags for the same
number of steps, so a replay lands on the same latent as the original edit.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .errors import RecipeError

RECIPE_FORMAT = "draggan-studio-recipe"
RECIPE_VERSION = 1
SPACES = ("w", "w+")


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
                 edited_photo: bool = False) -> dict[str, str]:
    """The text chunks `save_png` writes: what made the image and that it is AI-generated or AI-edited.

    Keys: `Software`, `AI` ("AI-generated", or "AI-edited" for an edited photo), `DigitalSourceType` (the IPTC
    term for the same), `Description` (one sentence), and when given `Model`, `Seed` and `Points` (JSON rows
    of [handle_x, handle_y, target_x, target_y] in image pixels).
    """
    kind = AI_EDITED if edited_photo else AI_GENERATED
    what = "A photo edited" if edited_photo else "An image generated"
    text = {"Software": SOFTWARE, "AI": kind, "DigitalSourceType": _SOURCE_TYPE[kind],
            "Description": f"{what} by a generative model (StyleGAN, DragGAN point-based editing) in {SOFTWARE}."}
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
             points: Sequence[Any] | None = None, edited_photo: bool = False, mark: bool | None = None) -> Path:
    """Write a uint8 [H, W, 3] image as PNG that says what it is.

    The PNG carries `png_metadata(model, seed, points, edited_photo)` as text chunks. `mark` stamps a visible
    "AI Generated" label (`add_ai_mark`); by default it is on for edited photos and off for generated images.
    """
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, f"bad image {image.dtype} {image.shape}"
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if edited_photo if mark is None else mark:
        image = add_ai_mark(image)
    info = PngInfo()
    for key, value in png_metadata(model, seed, points, edited_photo).items():
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


# ----------------------------------------------------------------------------------------------------------
# Masks as run-length encoding.

def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a 2-D boolean mask as row-major run lengths, starting with a (possibly empty) run of zeros."""
    assert mask.ndim == 2, f"mask must be [H, W], got {mask.shape}"
    flat = np.asarray(mask, dtype=bool).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode `mask_to_rle` output back to a bool [H, W] array."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = [int(c) for c in rle["counts"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise RecipeError(f"bad mask encoding: {exc}") from exc
    if h <= 0 or w <= 0 or any(c < 0 for c in counts) or sum(counts) != h * w:
        raise RecipeError(f"mask run lengths do not cover a {h}×{w} mask")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(h, w)


# ----------------------------------------------------------------------------------------------------------
# Edit recipes.

@dataclasses.dataclass
class DragRecord:
    """One finished drag: the points it started from, its fixed-area mask and how many steps it ran."""

    handles: list[tuple[float, float]]
    targets: list[tuple[float, float]]
    steps: int
    lr: float
    mask_lambda: float
    mask: np.ndarray | None = None   # bool [H, W], True = must stay fixed
    resume: bool = False             # continued the previous drag (same points, optimiser state kept)

    def to_json(self) -> dict[str, Any]:
        return {"handles": [[float(x), float(y)] for x, y in self.handles],
                "targets": [[float(x), float(y)] for x, y in self.targets],
                "steps": int(self.steps), "lr": float(self.lr), "mask_lambda": float(self.mask_lambda),
                "mask": None if self.mask is None else mask_to_rle(self.mask), "resume": bool(self.resume)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DragRecord":
        try:
            handles = [(float(p[0]), float(p[1])) for p in data["handles"]]
            targets = [(float(p[0]), float(p[1])) for p in data["targets"]]
            steps = int(data["steps"])
            lr = float(data["lr"])
            mask_lambda = float(data["mask_lambda"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecipeError(f"bad drag entry: {exc}") from exc
        if len(handles) != len(targets) or not handles:
            raise RecipeError("a drag needs the same, non-zero number of handles and targets")
        if steps < 0:
            raise RecipeError("a drag's step count cannot be negative")
        mask = None if data.get("mask") is None else rle_to_mask(data["mask"])
        return cls(handles=handles, targets=targets, steps=steps, lr=lr, mask_lambda=mask_lambda, mask=mask,
                   resume=bool(data.get("resume", False)))


@dataclasses.dataclass
class Recipe:
    """Everything needed to rebuild an edit from scratch."""

    model: str                      # a zoo key, a local path or a Hub "repo_id/filename"
    seed: int
    psi: float
    space: str                      # "w" or "w+"
    drags: list[DragRecord]
    image_size: tuple[int, int]     # (height, width) of the generator image, checked on replay
    model_label: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "model": self.model,
                "model_label": self.model_label, "seed": int(self.seed), "psi": float(self.psi),
                "space": self.space, "image_size": [int(v) for v in self.image_size],
                "drags": [d.to_json() for d in self.drags]}

    @classmethod
    def from_json(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
            raise RecipeError("not a DragGAN studio edit recipe")
        if int(data.get("version", -1)) > RECIPE_VERSION:
            raise RecipeError(f"recipe version {data.get('version')} is newer than this app understands "
                              f"({RECIPE_VERSION})")
        try:
            recipe = cls(model=str(data["model"]), seed=int(data["seed"]), psi=float(data["psi"]),
                         space=str(data["space"]), image_size=(int(data["image_size"][0]), int(data["image_size"][1])),
                         drags=[DragRecord.from_json(d) for d in data["drags"]],
                         model_label=str(data.get("model_label", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecipeError(f"incomplete recipe: {exc}") from exc
        if recipe.drags and recipe.drags[0].resume:
            raise RecipeError("the first drag of a recipe cannot be a resumed drag")
        if recipe.space not in SPACES:
            raise RecipeError(f"latent space must be one of {SPACES}, got {recipe.space!r}")
        for d in recipe.drags:
            if d.mask is not None and d.mask.shape != recipe.image_size:
                raise RecipeError(f"mask size {d.mask.shape} differs from the image size {recipe.image_size}")
        return recipe


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write a recipe as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(recipe.to_json(), indent=1))
    return path


def load_recipe(source: str | os.PathLike | dict[str, Any]) -> Recipe:
    """Read and validate a recipe from a JSON file path or an already-parsed dict."""
    if isinstance(source, dict):
        return Recipe.from_json(source)
    try:
        data = json.loads(Path(source).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecipeError(f"cannot read recipe: {exc}") from exc
    return Recipe.from_json(data)


def replay_recipe(recipe: Recipe, G: Any, on_step: Callable[[Any], None] | None = None,
                  config_overrides: dict[str, Any] | None = None) -> Any:
    """Rebuild the edit on generator `G`: a new DragSession at the recipe's seed, then every drag in order.

    Each drag sets its points and mask and runs exactly its recorded number of steps. Returns the session.
    """
    from .engine import DragConfig, DragSession

    if (G.img_height, G.img_width) != tuple(recipe.image_size):
        raise RecipeError(f"the recipe was made on a {recipe.image_size[0]}×{recipe.image_size[1]} model, "
                          f"this model makes {G.img_height}×{G.img_width} images")
    first = recipe.drags[0] if recipe.drags else None
    kwargs = dict(space=recipe.space)
    if first is not None:
        kwargs.update(lr=first.lr, mask_lambda=first.mask_lambda)
    kwargs.update(config_overrides or {})
    session = DragSession(G, seed=recipe.seed, psi=recipe.psi, config=DragConfig(**kwargs))
    for drag in recipe.drags:
        run_drag(session, drag, on_step=on_step)
    return session


def run_drag(session: Any, drag: DragRecord, on_step: Callable[[Any], None] | None = None,
             render_every: int = 0, stop_event: Any = None) -> int:
    """Apply one recorded drag to a session and return the number of steps it took.

    A new drag sets the step size, λ, points and mask, then runs up to `drag.steps` steps; a resumed drag
    keeps the session's drag state (points, optimiser) and only updates λ and the mask, as the editor does
    when Start is pressed again without touching the points.
    """
    if drag.resume:
        session.update_config(mask_lambda=drag.mask_lambda)
    else:
        session.update_config(lr=drag.lr, mask_lambda=drag.mask_lambda)
        session.set_points(handles=drag.handles, targets=drag.targets)
    session.set_mask(drag.mask)
    steps: set[int] = set()
    for r in session.run(max_steps=drag.steps, render_every=render_every, stop_event=stop_event):
        steps.add(int(r.step))
        if on_step is not None:
            on_step(r)
    return len(steps)
