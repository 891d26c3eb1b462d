"""Converted-model cache: every network pickle converted once, kept as a model folder keyed by the pickle's hash.

Unpickling a 360 MB network pickle takes seconds; rebuilding the module from its config and memory-mapping a
safetensors file takes a fraction of one. Each entry is a model folder (`draggan.checkpoints.model_folder`)
`<root>/<sha256 of source pickle>/` holding `model.safetensors` and `config.json` (`format_version`, `family`,
`init_kwargs`, `source`, `sha256`, `source_size`). This module only manages entries: `lookup` finds the entry
of a pickle, `save` writes one, `enforce_limit` evicts; it never builds a generator (`loader.load_generator`
does, through `builders`). A small stat index (`by-stat/<hash of path, size, mtime>` → sha256) spares
re-hashing the pickle on every load; the entry's recorded hash and size are checked against it. Entries are
written to a temporary folder and renamed into place, so a reader never sees a half-written one; an entry
that fails to load is reported with a warning (`BROKEN_ENTRY`) and replaced by a fresh conversion.

The cache is bounded: after each write, least recently used entries (folder mtime, refreshed on every use)
are removed until the total is at most `$DRAGGAN_CACHE_MAX_MB` (default 4096 MB); the entry just written or
used stays, and bundled models (`checkpoints/`, outside this folder) are never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import settings
from . import model_folder
from ..errors import ModelFormatError
from .digest import file_sha256
from .hub import hf_home
from .model_folder import CONFIG_FILE, WEIGHTS_FILE, is_model_folder

_INDEX_DIR = "by-stat"
_TMP_PREFIX = model_folder.TMP_PREFIX
_STALE_TMP_S = 3600.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def converted_cache_dir() -> Path:
    """`$DRAGGAN_CACHE`, else `draggan-converted/` next to the Hub cache (`$HF_HOME/draggan-converted`)."""
    configured = settings.get().cache_dir
    return configured if configured is not None else hf_home() / "draggan-converted"


def _stat_key(source: Path) -> str:
    st = source.stat()
    text = f"{source.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


BROKEN_ENTRY = "ignoring broken converted-model cache entry ({reason}); rebuilding it from {source}"


def lookup(source: Path) -> tuple[Path | None, str]:
    """(the converted entry of pickle `source`, or None; the sha256 of `source`) to read it from.

    A folder or a safetensors file is a converted model already: (None, "") and nothing to save; a folder is
    marked as just used. An entry whose config cannot be read or whose recorded hash or size does not match
    is removed with a warning (`BROKEN_ENTRY`) and reported as absent, so the caller rebuilds it.
    """
    if source.is_dir():
        touch(source)
        return None, ""
    if is_model_folder(source):
        return None, ""
    root = converted_cache_dir()
    index = root / _INDEX_DIR / _stat_key(source)
    sha = index.read_text(encoding="utf-8").strip() if index.is_file() else ""
    if not _SHA_RE.match(sha) or not (root / sha).is_dir():
        sha = file_sha256(source)
    entry = root / sha
    if not entry.is_dir():
        return None, sha
    try:
        config = model_folder.read_config(entry)
        if config.get("sha256") != sha or config.get("source_size") != source.stat().st_size:
            raise ModelFormatError(f"{entry.name}: recorded hash or size does not match {source.name}")
    except ModelFormatError as e:
        warnings.warn(BROKEN_ENTRY.format(reason=e, source=source.name), stacklevel=2)
        shutil.rmtree(entry, ignore_errors=True)
        return None, sha
    if not index.is_file():
        _atomic_write_text(index, sha)
    touch(entry)
    return entry, sha


def has_converted(source: str | Path) -> bool:
    """Cheap check (no hashing) whether `source` was converted before at its current size and mtime."""
    source = Path(source)
    root = converted_cache_dir()
    index = root / _INDEX_DIR / _stat_key(source)
    if not index.is_file():
        return False
    sha = index.read_text(encoding="utf-8").strip()
    return bool(_SHA_RE.match(sha)) and is_model_folder(root / sha)


def _remove_stale_tmp(root: Path) -> None:
    now = time.time()
    for tmp in root.glob(f"{_TMP_PREFIX}*"):
        try:
            if now - tmp.stat().st_mtime <= _STALE_TMP_S:
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()
        except OSError:
            pass


def save(module_or_state: torch.nn.Module | Mapping[str, torch.Tensor], config: Mapping[str, Any], source: Path,
         sha: str, replace: bool = False) -> Path:
    """Write a generator's tensors and `config` (`builders.generator_config`) as the converted entry of pickle
    `source` (content hash `sha`); returns the entry folder. A model folder already there (another process's
    conversion of the same pickle) is kept unless `replace` (it failed to load); anything else is replaced."""
    metadata = dict(source=str(source.resolve()), sha256=sha, source_size=source.stat().st_size)
    root = converted_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    entry = root / sha
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        model_folder.save_model_folder(tmp, module_or_state, config, metadata)
        try:
            os.replace(tmp, entry)
        except OSError:
            if is_model_folder(entry) and not replace:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(entry, ignore_errors=True)
                os.replace(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(root / _INDEX_DIR / _stat_key(source), sha)
    touch(entry)
    enforce_limit(keep=(entry,))
    return entry


def content_key(source: str | Path) -> str:
    """The sha256 a model is known by, whatever form it is loaded from: the source pickle's hash (from the
    stat index when it is there, else by hashing the file), or for a converted entry the pickle hash its
    config records, else the hash of its weights file. A pickle and its converted entry share one key."""
    source = Path(source)
    if is_model_folder(source):
        entry, weights = (source, source / WEIGHTS_FILE) if source.is_dir() else (source.parent, source)
        try:
            recorded = model_folder.read_config(entry).get("sha256", "")
        except ModelFormatError:
            recorded = ""
        return recorded if isinstance(recorded, str) and _SHA_RE.match(recorded) else file_sha256(weights)
    index = converted_cache_dir() / _INDEX_DIR / _stat_key(source)
    sha = index.read_text(encoding="utf-8").strip() if index.is_file() else ""
    return sha if _SHA_RE.match(sha) else file_sha256(source)


def touch(entry: Path) -> None:
    """Mark a cache entry as just used (its folder's mtime orders least-recently-used eviction)."""
    try:
        os.utime(entry)
    except OSError:
        pass


def cache_max_bytes() -> int:
    """The converted cache's size bound in bytes (setting `DRAGGAN_CACHE_MAX_MB`)."""
    return int(settings.get().cache_max_mb * 2**20)


def _entry_bytes(entry: Path) -> int:
    total = 0
    for file in entry.iterdir():
        try:
            total += file.stat().st_size
        except OSError:
            pass
    return total


def enforce_limit(max_bytes: int | None = None, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove least recently used entries until the cache holds at most `max_bytes` (default
    `cache_max_bytes()`); entries in `keep` stay. Stat-index files of removed entries go too. Returns the
    removed entry folders."""
    max_bytes = cache_max_bytes() if max_bytes is None else max_bytes
    root = converted_cache_dir()
    if not root.is_dir():
        return []
    kept = {Path(k).resolve() for k in keep}
    entries = []
    for entry in root.iterdir():
        if _SHA_RE.match(entry.name) and entry.is_dir():
            try:
                entries.append((entry.stat().st_mtime_ns, entry, _entry_bytes(entry)))
            except OSError:
                pass
    total = sum(size for _, _, size in entries)
    removed = []
    for _, entry, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if entry.resolve() in kept:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry)
    if removed:
        gone = {entry.name for entry in removed}
        for index in (root / _INDEX_DIR).glob("*"):
            try:
                if index.read_text(encoding="utf-8").strip() in gone:
                    index.unlink()
            except OSError:
                pass
    return removed
