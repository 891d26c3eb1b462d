"""Image components whose outputs are written once, whole, under their content's hash, then served as is.

Why: Gradio 6.31 saves an image output (array or PIL) with `processing_utils.save_pil_to_cache`, which
writes `<cache>/<hash of the bytes>/image.webp` in place (`Path.write_bytes`: truncate, then write) every
time the same image is returned — by this session again (a drag's last update and the page refresh after
it carry the same image; the before/after slider re-sends its start image) or by another visitor (everyone
who clicks the same example gets the same bytes). Starlette's `FileResponse` declares the size it read with
`stat` and then streams the file, so a fetch that overlaps a rewrite sends a short or long body: the visitor
gets a truncated image and uvicorn logs `h11._util.LocalProtocolError: Too little (or much) data for
declared Content-Length` with a traceback. Reproduced here: 15 of 400 fetches of one cached image while
another thread saved the same image again (the traceback of gradio-app/gradio#9537 and #10591).

Fix, on our side of Gradio: these subclasses encode the image themselves (same format and encoder options as
Gradio's), write it to a private temporary name inside the block's cache folder and `os.replace` it into
place only when that content is not there yet (a rename is atomic: a reader keeps the whole old file), and
hand Gradio the path. Gradio serves files already in its cache without copying them, and ages them out with
its other files (`delete_cache`); a reused file has its status time refreshed so that it ages from its last
use. The frontend sees the built-in components (`get_block_name`).

`Blocks` (the app's `gr.Blocks`) also tells each session's `UIState` which cache files it was sent
(`owned_files.claim`), so that a photo session's images and exports are deleted when it ends.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image as PILImage

FOLDER = "draggan-images"   # under the block's cache folder (GRADIO_TEMP_DIR)


def cached_image(value: Any, cache_dir: str | Path, fmt: str) -> Any:
    """An array or PIL image as the path of its encoding in `fmt` under `cache_dir`, written atomically
    once per content; any other value (None, a path) is returned unchanged."""
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8, got {value.dtype}")
        value = PILImage.fromarray(value)
    if not isinstance(value, PILImage.Image):
        return value
    fmt = fmt.lower()
    with BytesIO() as out:
        value.save(out, format=fmt)
        data = out.getvalue()
    folder = Path(cache_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()}.{fmt}"
    if path.exists():
        os.utime(path)          # ages from its last use, like Gradio's own cached copies
        return str(path)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def _paths(value: Any) -> list[str]:
    """The file paths in a postprocessed output (Gradio's file data models, dicts and lists of them)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        found = [value["path"]] if isinstance(value.get("path"), str) else []
        return found + [p for key, item in value.items() if key != "path" for p in _paths(item)]
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in _paths(item)]
    return []


class Blocks(gr.Blocks):
    """`gr.Blocks` that records, for each session's `UIState`, the files of Gradio's cache sent to it
    (`owned_files`): what a session was shown can be deleted when it ends."""

    async def postprocess_data(self, block_fn: Any, predictions: Any, state: Any) -> list[Any]:
        data = await super().postprocess_data(block_fn, predictions, state)
        from ..server import owned_files
        from ..service.state import UIState
        from ..server.tempdir import gradio_cache_dir

        owners = [v for v in getattr(state, "state_data", {}).values() if isinstance(v, UIState)]
        if owners:
            cache = str(gradio_cache_dir()) + os.sep
            for path in _paths(data):
                if os.path.realpath(path).startswith(cache):
                    for ui in owners:
                        owned_files.claim(ui, path)
        return data


class _BuiltIn:
    """The frontend component of a subclass is its built-in one's (`BLOCK`), as for Gradio's templates."""

    BLOCK = ""

    def get_block_name(self) -> str:
        return self.BLOCK

    def get_block_class(self) -> str:
        return self.BLOCK


class Image(_BuiltIn, gr.Image):
    """`gr.Image` whose outputs are served from files written once (module docstring)."""

    BLOCK = "image"

    def postprocess(self, value: Any) -> Any:
        return super().postprocess(cached_image(value, self.GRADIO_CACHE, self.format))


class ImageEditor(_BuiltIn, gr.ImageEditor):
    """`gr.ImageEditor` whose background, layers and composite are served from files written once."""

    BLOCK = "imageeditor"

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, dict):
            value = {key: ([cached_image(v, self.GRADIO_CACHE, self.format) for v in item] if key == "layers"
                           else cached_image(item, self.GRADIO_CACHE, self.format))
                     for key, item in value.items()}
        else:
            value = cached_image(value, self.GRADIO_CACHE, self.format)
        return super().postprocess(value)


class ImageSlider(_BuiltIn, gr.ImageSlider):
    """`gr.ImageSlider` whose two images are served from files written once."""

    BLOCK = "imageslider"

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            value = tuple(cached_image(v, self.GRADIO_CACHE, self.format) for v in value)
        return super().postprocess(value)
