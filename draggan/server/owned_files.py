"""Which files of Gradio's cache each live session was sent, so that a session's own files go when it ends.

Every image the page shows is a file in Gradio's cache (served images in `draggan-images/`, written once per
content; exports copied there for download), and so is an uploaded photo. Those files are shared by content:
two visitors who click the same example are sent the same file. A photo session's files are its own in
practice (nobody else has that photo), and the About text promises that they are deleted when the session
ends — not when `DRAGGAN_FILE_TTL_S` ages them out.

So each session (its `UIState`) holds the set of cache files it was sent or uploaded (`claim`), and this
module counts, per file, the live sessions holding it. `release(ui)` (called when the session is released)
deletes every file no other live session holds, with the folders left empty: for a photo session, every
served image of its inversion and of each edit, every export, and the upload. Files still held by another
session stay (deleting them would break that visitor's page); shared images age out by the TTL as before.
A file deleted while no session holds it is simply written again when next sent.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

_counts: dict[str, int] = {}
_lock = threading.Lock()


def claim(ui: Any, path: str | os.PathLike) -> None:
    """Record that the session `ui` (a `UIState`) was sent, or uploaded, the file at `path`."""
    key = os.path.realpath(path)
    with _lock:
        if key in ui.files:
            return
        ui.files.add(key)
        _counts[key] = _counts.get(key, 0) + 1


def holders(path: str | os.PathLike) -> int:
    """How many live sessions hold the file (tests)."""
    with _lock:
        return _counts.get(os.path.realpath(path), 0)


def release(ui: Any, root: str | os.PathLike) -> int:
    """Forget the session's files; delete those under `root` (Gradio's cache folder) that no other live
    session holds, and their folders when empty. Returns the number of files deleted."""
    root = Path(os.path.realpath(root))
    with _lock:
        mine, ui.files = ui.files, set()
        orphans = []
        for key in mine:
            left = _counts.get(key, 1) - 1
            if left > 0:
                _counts[key] = left
            else:
                _counts.pop(key, None)
                orphans.append(key)
    deleted = 0
    for key in orphans:
        if root not in Path(key).parents:
            continue
        try:
            os.remove(key)
            deleted += 1
        except OSError:
            continue
        folder = Path(key).parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()                # only when empty
            except OSError:
                break
            folder = folder.parent
    return deleted
