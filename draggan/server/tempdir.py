"""The app's one temp folder: session files (stop flags, exports) and Gradio's copies of uploads and downloads.

`app_temp_dir()` is `DRAGGAN_TEMP_DIR`, else `$TMPDIR/draggan`; sessions get private folders under its
`sessions/` (deleted when the session is released), and `use_for_gradio()` points `GRADIO_TEMP_DIR` at its
`gradio/` (unless the operator set it), where Gradio's cache is aged out by `gr.Blocks(delete_cache=...)`
(`DRAGGAN_FILE_TTL_S`). So one folder holds every file a visitor caused, and its size is the leak measure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .. import settings

GRADIO_ENV = "GRADIO_TEMP_DIR"


def app_temp_dir() -> Path:
    """The app's temp folder (created if missing)."""
    root = settings.get().temp_dir or Path(tempfile.gettempdir()) / "draggan"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sessions_dir() -> Path:
    """The folder holding one private folder per live session."""
    folder = app_temp_dir() / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def use_for_gradio() -> Path:
    """Point Gradio's upload/download cache under the app's folder (an operator's GRADIO_TEMP_DIR wins);
    returns the folder Gradio uses. Call before the app is launched."""
    if not os.environ.get(GRADIO_ENV):
        os.environ[GRADIO_ENV] = str(app_temp_dir() / "gradio")
    folder = Path(os.environ[GRADIO_ENV])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def gradio_cache_dir() -> Path:
    """The folder Gradio writes uploads and outputs to (its `get_upload_folder`: `GRADIO_TEMP_DIR`, else
    `$TMPDIR/gradio`)."""
    return Path(os.environ.get(GRADIO_ENV) or Path(tempfile.gettempdir()) / "gradio").resolve()


def delete_cache_policy() -> tuple[int, int]:
    """`gr.Blocks(delete_cache=(every, age))`: files older than `DRAGGAN_FILE_TTL_S` go, checked as often."""
    age = max(1, int(settings.get().file_ttl_s))
    return (max(1, min(age, 300)), age)


def file_count(folder: Path | None = None) -> int:
    """Files under `folder` (default: the app's temp folder); the soak's leak measure."""
    root = folder or app_temp_dir()
    return sum(len(files) for _, _, files in os.walk(root))


def age_out(folder: Path, age_s: float, keep: set[str] = frozenset(), now: float | None = None) -> int:
    """Delete the files under `folder` whose status changed more than `age_s` ago (Gradio's own measure),
    except the paths in `keep`, and the folders left empty; returns the files deleted.

    Gradio's `delete_cache` only deletes the files it recorded, and some outputs (the image editor's
    background, updated components) are written to its cache without being recorded, so they would stay
    for ever; this sweeps the whole folder the app owns."""
    import time

    now = time.time() if now is None else now
    removed = 0
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if path not in keep and now - os.lstat(path).st_ctime > age_s:
                    os.remove(path)
                    removed += 1
            except OSError:
                continue
        if dirpath != str(folder):
            try:
                os.rmdir(dirpath)       # only succeeds when empty
            except OSError:
                pass
    return removed
