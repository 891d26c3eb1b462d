"""Edit recipes: the JSON format that records a drag edit, and its replay as a stoppable job.

A recipe names the model, the start latent (seed, ψ, W or W+) and every drag that produced the image
(points, fixed-area mask as run-length encoding, step size, mask λ, steps run, tracker, whether it resumed
the previous drag). `replay` runs the same drags for the same number of steps, so it lands on the same
latent as the original edit.

**Recipes carry no paths.** `model` is a zoo key, or `"current"`: the model the replaying app or command
has loaded, checked by `model_sha256`, the model's content key (`checkpoints.cache.content_key`: the
source pickle's sha256, shared by its converted entry), so recipes of uploaded models stay usable. A
version-1 file whose `model` is a path (or anything but a zoo key) is read as `"current"` without a hash;
the path is never opened or kept.

**Retired drag methods** ("freedrag", "centroid") are read as the kept method that replaces them
(`engine.methods.resolve`), and the recipe's `notes` say so in one line each: the replay runs, and its image
can differ from the original's. An unknown method name is refused when the drag replays.

**Sizes are checked before anything is decoded**, against `draggan.limits.LIMITS`: file bytes, JSON nesting,
number of drags, point pairs, numbers (finite, in range), each mask's declared size against the recipe's
image size, then its run lengths (whole numbers summing to H×W) — only then is a mask decoded, and masks
equal in a recipe are decoded once and shared.

Format (version 2)::

    {"format": "draggan-studio-recipe", "version": 2, "model": "cartoon-faces-128" | "current",
     "model_sha256": "<hex, for current>", "model_label": "...", "seed": 0, "psi": 0.7, "space": "w+",
     "image_size": [H, W], "drags": [{"handles": [[x, y], ...], "targets": [[x, y], ...], "steps": 40,
     "lr": 0.002, "mask_lambda": 20.0, "tracker": "official", "resume": false,
     "mask": null | {"size": [H, W], "counts": [zeros, ones, zeros, ...]}}, ...]}
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .engine import methods
from .engine.config import SPACES
from .errors import RecipeError
from .limits import LIMITS, LimitError, check_depth, check_name, check_number, check_pair_count, load_json, short

RECIPE_FORMAT = "draggan-studio-recipe"
RECIPE_VERSION = 2
CURRENT_MODEL = "current"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_ZOO_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_LABEL_DROP_RE = re.compile(r"[^\w .,:()+×-]")   # a label is shown as Markdown: no links, images or markup


# ----------------------------------------------------------------------------------------------------------
# Models: a zoo key or the current model's content key.

def is_zoo_key(name: str) -> bool:
    """Whether `name` is a key of the model zoo (a registry lookup; nothing named by `name` is opened)."""
    from .checkpoints.zoo import list_models

    if not isinstance(name, str) or not _ZOO_KEY_RE.match(name):
        return False
    try:
        return any(entry.key == name for entry in list_models())
    except (OSError, ValueError):
        return False


def model_key(source: str) -> str:
    """The key a recipe checks a model by: a zoo key as is, else the content key (sha256) of the model file
    `source` resolves to. Only for sources the server or the user chose, never for a recipe's `model`."""
    from .checkpoints import cache
    from .checkpoints.hub import resolve_source

    if is_zoo_key(source) and not Path(source).exists():
        return source
    try:
        return cache.content_key(resolve_source(source))
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot identify the model to check the recipe against ({type(exc).__name__})") from None


def model_ref(source: str) -> tuple[str, str]:
    """(`model`, `model_sha256`) to record for an edit made on `source`: (zoo key, "") or ("current", sha)."""
    key = model_key(source)
    return (key, "") if not _SHA_RE.match(key) else (CURRENT_MODEL, key)


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


def check_rle(rle: Any, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Validate an RLE mask without decoding it: (H, W) declared, equal to `size` when given and at most
    `LIMITS.image_side` a side, and whole-number run lengths ≥ 0 that sum to H×W. Returns (H, W)."""
    if not isinstance(rle, dict) or not isinstance(rle.get("size"), (list, tuple)) or len(rle["size"]) != 2:
        raise RecipeError("bad mask encoding: expected {\"size\": [H, W], \"counts\": [...]}")
    h, w = rle["size"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (h, w)):
        raise RecipeError("bad mask encoding: its size must be two whole numbers")
    if size is not None and (h, w) != tuple(size):
        raise RecipeError(f"mask size ({h}, {w}) differs from the image size {tuple(size)}")
    if not (0 < h <= LIMITS.image_side and 0 < w <= LIMITS.image_side):
        raise RecipeError(f"mask size ({h}, {w}) is outside 1..{LIMITS.image_side} pixels a side")
    counts = rle.get("counts")
    if not isinstance(counts, list) or len(counts) > h * w + 1:
        raise RecipeError(f"bad mask encoding: 'counts' must be a list of at most {h * w + 1} run lengths")
    if not all(type(c) is int and c >= 0 for c in counts):
        raise RecipeError("bad mask encoding: run lengths must be whole numbers ≥ 0")
    if sum(counts) != h * w:
        raise RecipeError(f"mask run lengths do not cover a {h}×{w} mask")
    return h, w


def rle_to_mask(rle: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode `mask_to_rle` output back to a bool [H, W] array, after `check_rle`."""
    h, w = check_rle(rle, size)
    values = np.arange(len(rle["counts"])) % 2 == 1
    return np.repeat(values, rle["counts"]).reshape(h, w)


# ----------------------------------------------------------------------------------------------------------
# The recipe format.

def _limit(name: str, value: Any, what: str) -> Any:
    try:
        return check_number(name, value)
    except LimitError as exc:
        raise RecipeError(f"{what}: {exc}") from None


def _points(value: Any, what: str, size: tuple[int, int]) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        raise RecipeError(f"{what} must be a list of [x, y] points")
    check_pair_count(len(value))
    points = []
    for i, p in enumerate(value, 1):
        if not isinstance(p, list) or len(p) != 2:
            raise RecipeError(f"{what} point {i} must be [x, y]")
        x, y = (_coordinate(v, f"{what} point {i}") for v in p)
        if not (0 <= x <= size[1] - 1 and 0 <= y <= size[0] - 1):
            raise RecipeError(f"{what} point {i} ({x:g}, {y:g}) is outside the {size[1]}×{size[0]} image")
        points.append((x, y))
    return points


def _coordinate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise RecipeError(f"{what} must hold finite numbers, got {short(value)}")
    return float(value)


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
    tracker: str = methods.DEFAULT   # drag method (`DragConfig.tracker`, one of `engine.methods.names()`)

    def to_json(self) -> dict[str, Any]:
        return {"handles": [[float(x), float(y)] for x, y in self.handles],
                "targets": [[float(x), float(y)] for x, y in self.targets],
                "steps": int(self.steps), "lr": float(self.lr), "mask_lambda": float(self.mask_lambda),
                "tracker": self.tracker, "resume": bool(self.resume),
                "mask": None if self.mask is None else mask_to_rle(self.mask)}

    @classmethod
    def from_json(cls, data: Any, image_size: tuple[int, int], what: str = "drag",
                  masks: dict[tuple, np.ndarray] | None = None, notes: list[str] | None = None) -> "DragRecord":
        """Validate one drag of a recipe whose images are `image_size` (H, W); `masks` shares decoded masks;
        a retired drag method is replaced by its kept successor, with one line about it added to `notes`."""
        if not isinstance(data, dict):
            raise RecipeError(f"{what} must be an object")
        try:
            handles = _points(data["handles"], f"{what} handles", image_size)
            targets = _points(data["targets"], f"{what} targets", image_size)
            steps, lr, mask_lambda = data["steps"], data["lr"], data["mask_lambda"]
        except KeyError as exc:
            raise RecipeError(f"{what} lacks {exc}") from None
        except LimitError as exc:
            raise RecipeError(f"{what}: {exc}") from None
        if len(handles) != len(targets) or not handles:
            raise RecipeError(f"{what} needs the same, non-zero number of handles and targets")
        steps = _limit("max_steps", steps, f"{what} steps")
        lr = _limit("lr", lr, what)
        mask_lambda = _limit("mask_lambda", mask_lambda, what)
        try:
            tracker, note = methods.resolve(check_name("tracker", data.get("tracker", methods.DEFAULT)))
        except LimitError as exc:
            raise RecipeError(f"{what}: {exc}") from None
        if note is not None and notes is not None:
            notes.append(f"{what}: {note}")
        mask = None
        if data.get("mask") is not None:
            rle = data["mask"]
            check_rle(rle, image_size)
            key = tuple(rle["counts"])
            if masks is not None and key in masks:
                mask = masks[key]
            else:
                decoded = sum(m.size for m in (masks or {}).values()) + image_size[0] * image_size[1]
                if decoded > LIMITS.mask_pixels:
                    raise RecipeError(f"the recipe's masks exceed {LIMITS.mask_pixels} decoded pixels")
                mask = rle_to_mask(rle, image_size)
                mask.flags.writeable = False
                if masks is not None:
                    masks[key] = mask
        resume = data.get("resume", False)
        if not isinstance(resume, bool):
            raise RecipeError(f"{what}: resume must be true or false, got {short(resume)}")
        return cls(handles=handles, targets=targets, steps=steps, lr=lr, mask_lambda=mask_lambda, mask=mask,
                   resume=resume, tracker=tracker)


@dataclasses.dataclass
class Recipe:
    """Everything needed to rebuild an edit from scratch; `model` is a zoo key or `CURRENT_MODEL`."""

    model: str                      # a zoo key, or "current" (checked by model_sha256 when set)
    seed: int
    psi: float
    space: str                      # "w" or "w+"
    drags: list[DragRecord]
    image_size: tuple[int, int]     # (height, width) of the generator image, checked on replay
    model_label: str = ""
    model_sha256: str = ""          # content key of the current model ("" = not checked)
    notes: tuple[str, ...] = ()     # what reading changed (a retired drag method replaced), one line each

    def __post_init__(self) -> None:
        if self.model != CURRENT_MODEL and not is_zoo_key(self.model):
            self.model = CURRENT_MODEL   # a path or Hub reference is never kept, let alone opened

    def to_json(self) -> dict[str, Any]:
        data = {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "model": self.model,
                "model_label": self.model_label, "seed": int(self.seed), "psi": float(self.psi),
                "space": self.space, "image_size": [int(v) for v in self.image_size],
                "drags": [d.to_json() for d in self.drags]}
        if self.model == CURRENT_MODEL and self.model_sha256:
            data["model_sha256"] = self.model_sha256
        return data

    @classmethod
    def from_json(cls, data: Any) -> "Recipe":
        """Validate a parsed recipe (version 1 or 2): sizes and counts first, then each drag."""
        if not isinstance(data, dict) or data.get("format") != RECIPE_FORMAT:
            raise RecipeError("not a DragGAN studio edit recipe")
        try:
            check_depth("the recipe", data, LIMITS.recipe_depth)
        except LimitError as exc:
            raise RecipeError(str(exc)) from None
        version = data.get("version", 1)
        if type(version) is not int or version < 1:
            raise RecipeError(f"bad recipe version {short(version)}")
        if version > RECIPE_VERSION:
            raise RecipeError(f"recipe version {version} is newer than this app understands ({RECIPE_VERSION})")
        missing = [k for k in ("model", "seed", "psi", "space", "image_size", "drags") if k not in data]
        if missing:
            raise RecipeError(f"incomplete recipe: no {', '.join(missing)}")
        size = data["image_size"]
        if (not isinstance(size, list) or len(size) != 2
                or not all(type(v) is int and 0 < v <= LIMITS.image_side for v in size)):
            raise RecipeError(f"image_size must be [height, width], each 1..{LIMITS.image_side} pixels")
        image_size = (size[0], size[1])
        drags = data["drags"]
        if not isinstance(drags, list):
            raise RecipeError("drags must be a list")
        if len(drags) > LIMITS.drags:
            raise RecipeError(f"at most {LIMITS.drags} drags per recipe, got {len(drags)}")
        space = data["space"]
        if space not in SPACES:
            raise RecipeError(f"latent space must be one of {SPACES}, got {short(space)}")
        seed = _limit("seed", data["seed"], "the recipe")
        psi = _limit("psi", data["psi"], "the recipe")
        model, label = data["model"], data.get("model_label", "")
        sha = data.get("model_sha256", "") if version >= 2 else ""     # version 1 had no content key
        if not isinstance(model, str) or not isinstance(label, str):
            raise RecipeError("model and model_label must be text")
        if sha != "" and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
            raise RecipeError("model_sha256 must be 64 lower-case hex digits")
        model = model if is_zoo_key(model) else CURRENT_MODEL
        masks: dict[tuple, np.ndarray] = {}
        notes: list[str] = []
        records = [DragRecord.from_json(d, image_size, f"drag {i}", masks, notes) for i, d in enumerate(drags, 1)]
        if records and records[0].resume:
            raise RecipeError("the first drag of a recipe cannot be a resumed drag")
        return cls(model=model, seed=seed, psi=psi, space=space, drags=records, image_size=image_size,
                   model_label=_LABEL_DROP_RE.sub("", label)[:LIMITS.label_chars],
                   model_sha256=sha if model == CURRENT_MODEL else "", notes=tuple(notes))


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> Path:
    """Write a recipe as indented JSON."""
    import json

    path = Path(path)
    path.write_text(json.dumps(recipe.to_json(), indent=1))
    return path


def parse_recipe(text: str | bytes) -> Recipe:
    """Read and validate a recipe from its JSON text: size and nesting are checked before parsing."""
    if isinstance(text, bytes):
        if len(text) > LIMITS.recipe_bytes:
            raise RecipeError(f"cannot read the recipe: it is larger than {LIMITS.recipe_bytes} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise RecipeError("cannot read the recipe: it is not UTF-8 JSON text") from None
    try:
        data = load_json("it", text, LIMITS.recipe_bytes, LIMITS.recipe_depth)
    except LimitError as exc:
        raise RecipeError(f"cannot read the recipe: {exc}") from None
    return Recipe.from_json(data)


def load_recipe(source: str | os.PathLike | dict[str, Any]) -> Recipe:
    """Read and validate a recipe from a JSON file (at most `LIMITS.recipe_bytes` of it are read) or an
    already-parsed dict. Error messages never show the file's path."""
    if isinstance(source, dict):
        return Recipe.from_json(source)
    try:
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            size = min(st.st_size, LIMITS.recipe_bytes) if stat.S_ISREG(st.st_mode) else LIMITS.recipe_bytes
            data = f.read(size + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe file ({exc.strerror or type(exc).__name__})") from None
    return parse_recipe(data)


# ----------------------------------------------------------------------------------------------------------
# Replay.

@dataclasses.dataclass
class ReplayProgress:
    """Where a replay is: drag `drag` of `drags` (1-based), step `step` of at most `steps` in it."""

    drag: int
    drags: int
    step: int
    steps: int
    result: Any                      # the engine's StepResult of this step (`image` set when rendered)


@dataclasses.dataclass
class ReplayedDrag:
    """One drag as replayed: its record (`steps` = steps taken), its rendered frames, whether it moved."""

    record: DragRecord
    frames: list[np.ndarray]
    moved: bool


@dataclasses.dataclass
class ReplayResult:
    """A finished or stopped replay: the session at its end, the drags it ran, the start image."""

    session: Any                     # the DragSession, holding the latent, points and undo history
    drags: list[ReplayedDrag]
    start_image: np.ndarray
    stopped: bool                    # the stop event ended it before every drag ran all its steps


def check_model(recipe: Recipe, G: Any, current_model_key: str | None) -> None:
    """Refuse a generator that cannot be the recipe's: another image size, or another model by key.

    `current_model_key` is what the caller knows `G` as (`model_key` of its source); None skips the identity
    check (the caller vouches for `G`). A "current" recipe without a recorded hash (version 1) fits any model
    of the right size.
    """
    if (int(G.img_height), int(G.img_width)) != tuple(recipe.image_size):
        raise RecipeError(f"the recipe was made on a {recipe.image_size[0]}×{recipe.image_size[1]} model, "
                          f"this model makes {G.img_height}×{G.img_width} images")
    check_model_key(recipe, current_model_key)


def check_model_key(recipe: Recipe, current_model_key: str | None) -> None:
    """The identity half of `check_model`, usable before the model is loaded."""
    if current_model_key is None:
        return
    if recipe.model != CURRENT_MODEL:
        if current_model_key != recipe.model:
            raise RecipeError(f"the recipe was made on the zoo model {recipe.model!r}: load that model to replay it")
    elif recipe.model_sha256 and current_model_key != recipe.model_sha256:
        raise RecipeError(f"the recipe was made on another model (content key {recipe.model_sha256[:12]}…) than "
                          f"the one loaded ({current_model_key[:12]}…): load the model it was made on")


def _engine_config(recipe: Recipe, overrides: dict[str, Any] | None) -> Any:
    from .engine import DragConfig

    kwargs: dict[str, Any] = dict(space=recipe.space)
    if recipe.drags:
        first = recipe.drags[0]
        kwargs.update(lr=first.lr, mask_lambda=first.mask_lambda)
        kwargs["tracker"] = first.tracker
    kwargs.update(overrides or {})
    _check_tracker(kwargs.get("tracker", methods.DEFAULT))
    return DragConfig(**kwargs)


def _check_tracker(tracker: str) -> None:
    if tracker not in methods.METHODS:
        raise RecipeError(f"this installation has no drag method {tracker!r}; it has {', '.join(methods.names())}")


def run_drag(session: Any, drag: DragRecord, on_step: Callable[[Any], None] | None = None,
             render_every: int = 0, stop_event: threading.Event | None = None) -> int:
    """Apply one recorded drag to a session and return the number of steps it took.

    A new drag sets the step size, λ, tracker, points and mask, then runs up to `drag.steps` steps; a resumed
    drag keeps the session's drag state (points, optimiser) and only updates λ and the mask, as the editor
    does when Start is pressed again without touching the points. The settings go through
    `DragSession.update_config`, so the engine's own validation sees them.
    """
    changes: dict[str, Any] = dict(mask_lambda=drag.mask_lambda)
    if not drag.resume:
        _check_tracker(drag.tracker)
        changes.update(lr=drag.lr, tracker=drag.tracker)
    session.update_config(**changes)
    if not drag.resume:
        session.set_points(handles=drag.handles, targets=drag.targets)
    session.set_mask(drag.mask)
    steps: set[int] = set()
    for r in session.run(max_steps=drag.steps, render_every=render_every, stop_event=stop_event):
        steps.add(int(r.step))
        if on_step is not None:
            on_step(r)
    return len(steps)


def replay(recipe: Recipe, G: Any, *, current_model_key: str | None = None,
           on_step: Callable[[ReplayProgress], None] | None = None, stop_event: threading.Event | None = None,
           render_every: int = 0, max_frames: int = 240, config_overrides: dict[str, Any] | None = None
           ) -> ReplayResult:
    """Rebuild the edit on generator `G`: a new DragSession at the recipe's seed, then every drag in order.

    Checks the model first (`check_model`). Each drag runs exactly its recorded number of steps with its
    recorded settings; `on_step` hears every step; frames are kept every `render_every` steps (0: only each
    drag's last image), at most `max_frames` a drag. Setting `stop_event` ends the replay after the current
    step: the result then holds the drags run so far, the last one with the steps it took.
    """
    from .engine import DragSession

    check_model(recipe, G, current_model_key)
    session = DragSession(G, seed=recipe.seed, psi=recipe.psi, config=_engine_config(recipe, config_overrides))
    start_image = session.render()
    done: list[ReplayedDrag] = []
    stopped = False
    for index, drag in enumerate(recipe.drags, 1):
        if stop_event is not None and stop_event.is_set():
            stopped = True
            break
        frames: list[np.ndarray] = []
        moved = False

        def keep(r: Any) -> None:
            nonlocal moved
            moved = moved or not r.done
            if r.image is not None and len(frames) < max_frames:
                frames.append(r.image)
            if on_step is not None:
                on_step(ReplayProgress(drag=index, drags=len(recipe.drags), step=int(r.step), steps=drag.steps,
                                       result=r))

        taken = run_drag(session, drag, on_step=keep, render_every=render_every, stop_event=stop_event)
        stopped = taken < drag.steps and stop_event is not None and stop_event.is_set()
        record = dataclasses.replace(drag, steps=taken) if stopped else drag
        done.append(ReplayedDrag(record=record, frames=frames, moved=moved))
        if stopped:
            break
    return ReplayResult(session=session, drags=done, start_image=start_image, stopped=stopped)
