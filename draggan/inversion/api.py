"""Real-photo inversion in one call: validate and crop the upload, project it, tune a private generator.

    result = invert(G, photo, InversionConfig(), progress=callback, cancel=threading.Event())
    session = DragSession(result.G_tuned, w=result.w, config=...)

`G` is only read, so one loaded generator can serve many sessions; `result.G_tuned` belongs to the caller.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .align import align_face
from ..errors import PhotoError
from ..images import to_uint8
from .config import InversionConfig, InversionProgress, StepTracker
from .losses import make_loss
from .projection import project
from .pti import tune_generator

MIN_SIDE = 32
DEFAULT_MAX_MEGAPIXELS = 50.0

ImageInput = Image.Image | np.ndarray | bytes | str | os.PathLike


@dataclasses.dataclass
class InversionResult:
    """What `invert` found. Drag with `DragSession(G_tuned, w=w)`; render with noise_mode='const'."""

    w: torch.Tensor                       # [1, num_ws, w_dim] W+ latent on the generator's device
    G_tuned: torch.nn.Module              # private copy of the generator: tuned weights, fitted noise maps
    psnr: float                           # dB between the reconstruction and the prepared target
    lpips: float | None                   # LPIPS-VGG16 of the reconstruction, None without LPIPS weights
    loss_name: str                        # 'lpips-vgg16' or 'pixel+multiscale'
    loss_note: str | None                 # why the fallback loss was used (show it in the UI)
    history: list[tuple[int, float]]      # (step, mean reconstruction loss of the `log_every` steps up to it)
    target: np.ndarray                    # uint8 [H, W, 3]: the prepared photo the generator was fitted to
    image: np.ndarray                     # uint8 [H, W, 3]: the reconstruction G_tuned(w)
    seconds: float


def _open(image: ImageInput) -> Image.Image:
    """Any supported upload → PIL image (not yet decoded for files); PhotoError for anything else."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _from_array(image)
    if isinstance(image, (bytes, bytearray)):
        source = io.BytesIO(image)
    elif isinstance(image, (str, os.PathLike)):
        source = Path(image)
        if not source.is_file():
            raise PhotoError(f"no such image file: {source}")
    else:
        raise PhotoError(f"expected an image (PIL image, array, bytes or file path), got {type(image).__name__}")
    try:
        return Image.open(source)
    except (UnidentifiedImageError, OSError) as exc:
        raise PhotoError("the upload is not an image this app can read (use PNG, JPEG or WebP)") from exc


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise PhotoError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise PhotoError(f"an image array must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = (np.clip(np.nan_to_num(arr), 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(arr)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Grey → RGB; anything with transparency is composited on white; 16-bit and float grey are rescaled."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((np.clip(arr / top, 0, 1) * 255 + 0.5).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """An upload decoded and cropped once: the generator's input and what the upload was."""

    target: np.ndarray               # uint8 [img_height, img_width, 3]
    size: tuple[int, int]            # the upload's (width, height) before any crop
    mode: str                        # its PIL mode ("L", "RGBA", "P", ...)
    transparent: bool                # it had transparency (filled with white)


def prepare_image(image: ImageInput, G: torch.nn.Module, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                  face_align: bool = False) -> np.ndarray:
    """`prepare(...)`'s target: the generator's input, uint8 [img_height, img_width, 3]."""
    return prepare(image, G, max_megapixels, face_align).target


def prepare(image: ImageInput, G: torch.nn.Module, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
            face_align: bool = False) -> PreparedImage:
    """Validate an upload and turn it into the generator's input, decoding it once.

    Rejects (`PhotoError` with a message for the user) non-images, images under 32 px on a side and images over
    `max_megapixels`. Applies EXIF rotation, converts grey to RGB, composites transparency on white,
    optionally crops the face FFHQ-style (`align.align_face`; raises `FaceAlignmentUnavailable` without dlib,
    `PhotoError` when no face is found), centre-crops to the model's aspect ratio and resizes with Lanczos.
    """
    try:
        img = _open(image)
    except Image.DecompressionBombError:
        raise PhotoError(f"it is far too large (the limit is {max_megapixels:g} MP)") from None
    width, height = img.size
    size, mode = (width, height), img.mode
    transparent = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if min(width, height) < MIN_SIDE:
        raise PhotoError(f"the image is too small ({width}×{height} px); it needs at least {MIN_SIDE} px on each side")
    if width * height > max_megapixels * 1e6:
        raise PhotoError(f"the image is too large ({width}×{height} px = {width * height / 1e6:.1f} MP); "
                         f"the limit is {max_megapixels:g} MP")
    try:
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
    except (OSError, SyntaxError) as exc:
        raise PhotoError(f"the image file is damaged or truncated ({exc})") from exc
    except Image.DecompressionBombError:
        raise PhotoError(f"it is far too large (the limit is {max_megapixels:g} MP)") from None
    out_w, out_h = G.img_width, G.img_height
    if face_align:
        img = align_face(img, max(out_w, out_h))
    width, height = img.size
    if width * out_h > height * out_w:
        crop_w, crop_h = round(height * out_w / out_h), height
    else:
        crop_w, crop_h = width, round(width * out_h / out_w)
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    img = img.crop((left, top, left + crop_w, top + crop_h))
    if img.size != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    assert arr.shape == (out_h, out_w, 3)
    return PreparedImage(target=arr, size=size, mode=mode, transparent=transparent)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (values are clipped to that range first)."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).square().mean().item() / 4.0
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def invert(G: torch.nn.Module, image: ImageInput, config: InversionConfig | None = None,
           progress: Callable[[InversionProgress], None] | None = None,
           cancel: threading.Event | None = None) -> InversionResult:
    """Invert a photo: `prepare_image`, projection into W then W+, then pivotal tuning of a private copy of G.

    `progress` receives an `InversionProgress` after every step (with a preview image now and then);
    setting `cancel` makes the call raise `InversionCancelled` before its next step. `G` is never modified.
    """
    config = config or InversionConfig()
    start = time.perf_counter()
    if G.img_channels != 3:
        raise ValueError(f"photo inversion needs an RGB generator, this one has {G.img_channels} channels")
    device = next(G.parameters()).device
    target_u8 = prepare_image(image, G, face_align=config.face_align)
    target = torch.tensor(target_u8).to(device=device, dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1
    loss = make_loss(config, device)
    tracker = StepTracker(config.total_steps, config.log_every, config.preview_every, progress, cancel)
    proj = project(G, target, loss, config, tracker)
    G_tuned = tune_generator(G, proj.ws, proj.noise_bufs, target, loss, config, tracker)
    with torch.no_grad():   # the direct render where it is the cheaper one (the same image up to float rounding)
        synthesis = G_tuned.synthesis
        recon = (synthesis.render_direct(proj.ws) if synthesis.direct_render_supported(device)
                 else synthesis(proj.ws, noise_mode="const"))
        lpips_value = None
        if loss.lpips is not None:   # the loss's LPIPS: the target's features are those the tuning computed
            lpips_value = float(loss.fn(recon.clamp(-1, 1), target)[0])
    return InversionResult(w=proj.ws, G_tuned=G_tuned, psnr=psnr(recon, target), lpips=lpips_value,
                           loss_name=loss.name, loss_note=loss.note, history=tracker.history,
                           target=target_u8, image=to_uint8(recon), seconds=time.perf_counter() - start)
