"""The model zoo: `checkpoints/zoo.json`, a registry of generators loadable by a short key.

Each entry names either a file in a Hugging Face Hub repo (`repo_id` + `filename`) or a file shipped next to
the registry (`path`, relative to the `checkpoints/` folder). Local entries come first in `list_models()` so
a bundled model is the default wherever the first entry is used.

A Hub entry may pin `revision` (a 40-hex commit id of the repo) and `sha256` (the file's content hash, as
the Hub's blob page shows it); a downloaded or cached file whose hash differs is refused (see `hub.py`).
`licence` names the weights' licence, one of `licences.LICENCES`. A malformed file or entry raises `ZooError`,
its message naming the field (and the file by its name only).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LimitError, UnknownModelError, ZooError
from ..limits import check_number
from .builders import FAMILIES
from .licences import LICENCES

CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
ZOO_PATH = CHECKPOINTS_DIR / "zoo.json"
FORMATS = ("nvidia-pickle", "tf-pickle", "safetensors")
ZOO_FORMAT_VERSION = 1

_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_REQUIRED = ("key", "name", "format", "family", "resolution")
_OPTIONAL = ("repo_id", "filename", "revision", "sha256", "licence", "path", "content", "approx_size_mb", "drag_lr",
             "notes")


@dataclass(frozen=True)
class ZooEntry:
    """One registry entry. `resolution` and `content` are (height, width) in generator pixels.

    `drag_lr` is the drag step size recommended for this model (the app's default when it is picked); None
    means the engine's default. Models whose W codes are larger per coordinate need larger Adam steps.
    `revision` is the pinned Hub commit (None: the repo's main branch), `sha256` the file's expected content
    hash (None: not checked), `licence` a key of `licences.LICENCES` (None: not stated in the registry).
    """

    key: str
    name: str
    format: str
    family: str
    resolution: tuple[int, int]
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    licence: str | None = None
    path: str | None = None
    content: tuple[int, int] | None = None
    approx_size_mb: float | None = None
    drag_lr: float | None = None
    notes: str | None = None
    base_dir: Path = CHECKPOINTS_DIR

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def local_path(self) -> Path | None:
        """Absolute path of a local entry's file (None for Hub entries)."""
        return None if self.path is None else (self.base_dir / self.path).resolve()

    @property
    def hub_ref(self) -> str | None:
        """`repo_id/filename`, the form `resolve_source` accepts (None for local entries)."""
        return None if self.repo_id is None else f"{self.repo_id}/{self.filename}"

    @property
    def height(self) -> int:
        return self.resolution[0]

    @property
    def width(self) -> int:
        return self.resolution[1]


def _pair(value: Any, what: str) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ZooError(f"{what} must be [height, width] with positive integers, got {value!r:.40}")
    return int(value[0]), int(value[1])


def _entry_from_dict(raw: Any, base_dir: Path) -> ZooEntry:
    """Validate one JSON entry and turn it into a `ZooEntry`."""
    if not isinstance(raw, dict):
        raise ZooError(f"zoo entry must be an object, got {type(raw).__name__}")
    key = raw.get("key")
    where = f"zoo entry {key!r:.60}"
    missing = [name for name in _REQUIRED if name not in raw]
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        raise ZooError(f"{where}: missing fields {missing}, unknown fields {unknown}")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ZooError(f"{where}: key must be lower-case letters, digits, '.', '_' or '-'")
    for name in ("name", "repo_id", "filename", "revision", "sha256", "licence", "path", "notes"):
        if raw.get(name) is not None and (not isinstance(raw[name], str) or not raw[name]):
            raise ZooError(f"{where}: {name} must be a non-empty string")
    if raw["format"] not in FORMATS:
        raise ZooError(f"{where}: format must be one of {FORMATS}, got {raw['format']!r:.40}")
    if raw["family"] not in FAMILIES:
        raise ZooError(f"{where}: family must be one of {FAMILIES}, got {raw['family']!r:.40}")
    hub = raw.get("repo_id") is not None or raw.get("filename") is not None
    if hub == (raw.get("path") is not None):
        raise ZooError(f"{where}: give either 'path' (local file) or 'repo_id' + 'filename' (Hub file)")
    if hub and (raw.get("repo_id") is None or raw.get("filename") is None or raw["repo_id"].count("/") != 1):
        raise ZooError(f"{where}: a Hub entry needs repo_id 'owner/name' and a filename")
    if raw.get("revision") is not None and (not hub or not _COMMIT_RE.match(raw["revision"])):
        raise ZooError(f"{where}: revision must be a Hub entry's 40-hex commit id, got {raw['revision']!r:.60}")
    if raw.get("sha256") is not None and (not hub or not _SHA256_RE.match(raw["sha256"])):
        raise ZooError(f"{where}: sha256 must be a Hub entry's 64 lower-case hex digits, got {raw['sha256']!r:.80}")
    if raw.get("licence") is not None and raw["licence"] not in LICENCES:
        raise ZooError(f"{where}: licence must be one of {tuple(LICENCES)}, got {raw['licence']!r:.40}")
    if raw.get("path") is not None and Path(raw["path"]).is_absolute():
        raise ZooError(f"{where}: path must be relative to the registry's folder")
    resolution = _pair(raw["resolution"], f"{where}: resolution")
    content = None if raw.get("content") is None else _pair(raw["content"], f"{where}: content")
    if content is not None and (content[0] > resolution[0] or content[1] > resolution[1]):
        raise ZooError(f"{where}: content {content} is larger than resolution {resolution}")
    size = raw.get("approx_size_mb")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0):
        raise ZooError(f"{where}: approx_size_mb must be a positive number")
    drag_lr = raw.get("drag_lr")
    if drag_lr is not None:
        try:
            check_number("lr", drag_lr, label=f"{where}: drag_lr")     # the drag's bound, from the limits table
        except LimitError as e:
            raise ZooError(str(e)) from None
    return ZooEntry(key=key, name=raw["name"], format=raw["format"], family=raw["family"], resolution=resolution,
                    repo_id=raw.get("repo_id"), filename=raw.get("filename"), revision=raw.get("revision"),
                    sha256=raw.get("sha256"), licence=raw.get("licence"), path=raw.get("path"), content=content,
                    approx_size_mb=size, drag_lr=drag_lr,
                    notes=raw.get("notes"),
                    base_dir=base_dir)


@functools.lru_cache(maxsize=8)
def _load_zoo(path: Path, mtime_ns: int) -> tuple[ZooEntry, ...]:
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ZooError(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, dict) or data.get("format_version") != ZOO_FORMAT_VERSION:
        raise ZooError(f"{path.name}: format_version must be {ZOO_FORMAT_VERSION} in a JSON object")
    if not isinstance(data.get("models"), list):
        raise ZooError(f"{path.name}: models must be a list")
    entries = [_entry_from_dict(raw, path.parent) for raw in data["models"]]
    keys = [e.key for e in entries]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ZooError(f"{path.name}: key must be unique; duplicate keys {duplicates}")
    return tuple(sorted(entries, key=lambda e: not e.is_local))


def list_models(zoo_path: str | Path | None = None) -> list[ZooEntry]:
    """All registry entries, validated; local entries first, then Hub entries in file order."""
    path = Path(zoo_path or ZOO_PATH).resolve()
    return list(_load_zoo(path, path.stat().st_mtime_ns))


def find_model(key: str, zoo_path: str | Path | None = None) -> ZooEntry | None:
    """The entry for `key`, or None when `key` is not a registry key (a local file, a Hub file)."""
    return next((e for e in list_models(zoo_path) if e.key == key), None)


def get_model(key: str, zoo_path: str | Path | None = None) -> ZooEntry:
    """The entry for `key`; `UnknownModelError` naming the valid keys otherwise."""
    entry = find_model(key, zoo_path)
    if entry is not None:
        return entry
    entries = list_models(zoo_path)
    raise UnknownModelError(f"unknown model key {key!r}; valid keys: {', '.join(e.key for e in entries)}")
