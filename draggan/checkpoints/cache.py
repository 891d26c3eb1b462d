"""Converted-model cache: a generator's weights as safetensors plus a JSON config, keyed by the pickle's hash.

Unpickling a 360 MB network pickle takes seconds; rebuilding the module from its config and memory-mapping a
safetensors file takes a fraction of one. Each entry is a model folder (`draggan.checkpoints.model_folder`)
`<root>/<sha256 of source pickle>/` holding `model.safetensors` and `config.json` (`format_version`, `family`,
`init_kwargs`, `source`, `sha256`, `source_size`). `save_converted` writes the same format anywhere (a tuned
or trained generator), and `load_converted` reads any such folder or weights file. A small stat index (`by-stat/<hash of path, size, mtime>` → sha256) spares re-hashing the
pickle on every load; the entry's recorded hash and size are checked against it. Entries are written to a
temporary folder and renamed into place, so a reader never sees a half-written one; an entry that fails to
load is removed and rebuilt from the pickle.

The config also travels inside `model.safetensors` (metadata key `draggan_config`, the same JSON), so a lone
weights file is a complete model. The cache is bounded: after each write, least recently used entries
(folder mtime, refreshed on every use) are removed until the total is at most `$DRAGGAN_CACHE_MAX_MB`
(default 4096 MB); the entry just written or used stays, and bundled models (`checkpoints/`, outside this
folder) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .. import settings
from . import model_folder
from .builders import FAMILIES, build_generator
from ..errors import ModelFormatError
from .digest import file_sha256
from .hub import hf_home
from .model_folder import CONFIG_FILE, WEIGHTS_FILE

FORMAT_VERSION = 1
_INDEX_DIR = "by-stat"
_TMP_PREFIX = model_folder.TMP_PREFIX
_STALE_TMP_S = 3600.0
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


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


def _looks_like_safetensors(path: Path) -> bool:
    """Content check: 8-byte little-endian header length followed by a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= _MAX_HEADER_BYTES and head[8:9] == b"{"


def is_converted(path: str | Path) -> bool:
    """True for a converted entry: a folder with config + weights, or a safetensors file (judged by content)."""
    path = Path(path)
    if path.is_dir():
        return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
    return path.is_file() and _looks_like_safetensors(path)


def generator_config(G: torch.nn.Module) -> dict[str, Any]:
    """What rebuilds `G` with `build_generator`: `format_version`, `family`, `init_kwargs` (JSON-normalised)."""
    return dict(format_version=FORMAT_VERSION, family=G.family,
                init_kwargs=json.loads(json.dumps(G.init_kwargs)))


def validate_config(config: Any, where: str) -> dict[str, Any]:
    """`config` if it is a converted-model config (format version, family, init_kwargs dict), else
    `ModelFormatError` naming `where`."""
    if not isinstance(config, dict) or config.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{where}: not a format_version {FORMAT_VERSION} converted-model config")
    if config.get("family") not in FAMILIES or not isinstance(config.get("init_kwargs"), dict):
        raise ModelFormatError(f"{where}: missing or invalid 'family' / 'init_kwargs' in the model config")
    return config


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated config of a converted folder or weights file; `ModelFormatError` if missing or malformed."""
    return validate_config(model_folder.read_config(path), Path(path).name)


def config_metadata(config: dict[str, Any]) -> dict[str, str]:
    """safetensors metadata that carries `config` inside the weights file (as `model_folder` writes it)."""
    return {model_folder.METADATA_KEY: json.dumps(config, separators=(",", ":"))}


def metadata_config(metadata: dict[str, str] | None, where: str) -> dict[str, Any]:
    """The validated config stored in a safetensors file's metadata; `ModelFormatError` if absent or bad."""
    text = (metadata or {}).get(model_folder.METADATA_KEY)
    if not isinstance(text, str):
        raise ModelFormatError(f"{where} carries no model config: a .safetensors model needs its config.json "
                               "beside it, or in its metadata (as DragGAN studio writes it)")
    return validate_config(model_folder.parse_config(text, where), where)


class _SkipRandomInit(TorchFunctionMode):
    """Inside the block, `torch.randn` / `torch.rand` return uninitialised tensors of the requested shape.

    Drawing random initial weights is most of the time spent building a 512 model, and wasted when every
    tensor is replaced right after by `load_state_dict(strict=True, assign=True)`. Assigning the safetensors
    tensors (copy-on-write memory maps of the file) instead of copying them spares another pass over the
    weights; pages are read on first use, and writes to them never reach the file.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.randn or func is torch.rand:
            kwargs.pop("generator", None)
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def _build(config: dict[str, Any], weights: Path, name: str | None = None) -> torch.nn.Module:
    try:
        state = model_folder.load_state(weights)
        with _SkipRandomInit():
            G = build_generator(config["family"], config["init_kwargs"])
        unloaded = {name for name, _ in [*G.named_parameters(), *G.named_buffers()]} - set(state)
        if unloaded:
            G = build_generator(config["family"], config["init_kwargs"])
        G.load_state_dict(state, strict=True, assign=True)
    except Exception as e:
        if name is not None:
            raise ModelFormatError(f"{name}: cannot build a generator from its weights and config "
                                   f"({type(e).__name__}: {str(e)[:200]})") from None
        raise ModelFormatError(f"{weights}: cannot rebuild the generator from the converted cache ({e})") from e
    return G.eval().requires_grad_(False)


def load_converted(path: str | Path) -> torch.nn.Module:
    """Rebuild a generator from a converted folder or weights file (config beside it or in its header)."""
    if Path(path).is_dir():
        touch(Path(path))
    return _build(read_config(path), model_folder.weights_path(path))


def save_converted(G: torch.nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `G` as a converted model folder (or `.safetensors` file) that `load_converted` and
    `load_generator` read; `metadata` is JSON-able provenance. Returns the weights file."""
    return model_folder.save_model_folder(path, G, generator_config(G), metadata)


def lookup(source: Path) -> tuple[torch.nn.Module | None, str]:
    """Return (generator from the cache or None, sha256 of `source`).

    A corrupt or mismatching entry is removed with a warning and reported as absent, so the caller rebuilds it.
    """
    root = converted_cache_dir()
    index = root / _INDEX_DIR / _stat_key(source)
    sha = index.read_text(encoding="utf-8").strip() if index.is_file() else ""
    if not _SHA_RE.match(sha) or not (root / sha).is_dir():
        sha = file_sha256(source)
    entry = root / sha
    if not entry.is_dir():
        return None, sha
    try:
        config = read_config(entry)
        if config.get("sha256") != sha or config.get("source_size") != source.stat().st_size:
            raise ModelFormatError(f"{entry}: recorded hash or size does not match {source}")
        G = _build(config, entry / WEIGHTS_FILE)
    except ModelFormatError as e:
        warnings.warn(f"ignoring broken converted-model cache entry ({e}); rebuilding it from {source.name}",
                      stacklevel=2)
        shutil.rmtree(entry, ignore_errors=True)
        return None, sha
    if not index.is_file():
        _atomic_write_text(index, sha)
    touch(entry)
    return G, sha


def has_converted(source: str | Path) -> bool:
    """Cheap check (no hashing) whether `source` was converted before at its current size and mtime."""
    source = Path(source)
    root = converted_cache_dir()
    index = root / _INDEX_DIR / _stat_key(source)
    if not index.is_file():
        return False
    sha = index.read_text(encoding="utf-8").strip()
    return bool(_SHA_RE.match(sha)) and is_converted(root / sha)


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


def save(G: torch.nn.Module, source: Path, sha: str) -> Path:
    """Write `G` as the converted entry of pickle `source` (content hash `sha`); returns the entry folder."""
    metadata = dict(source=str(source.resolve()), sha256=sha, source_size=source.stat().st_size)
    root = converted_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    entry = root / sha
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=root))
    try:
        save_converted(G, tmp, metadata)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not is_converted(entry):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
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
    if is_converted(source):
        entry, weights = (source, source / WEIGHTS_FILE) if source.is_dir() else (source.parent, source)
        try:
            recorded = read_config(entry).get("sha256", "")
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
