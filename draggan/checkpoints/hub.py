"""Turn a model source (local path, zoo key, Hub reference) into a local file, downloading when needed.

Downloads go through `huggingface_hub.hf_hub_download`, so files land in (and are reused from) the standard
Hub cache with its progress bar. A file already in that cache is returned without any network access. When
the Hub cannot be used (offline mode, no route to it, file absent) we raise one `ModelUnavailableError` that
says which file is missing and how to get it, after a few seconds at most rather than a long retry loop.

A reference with a `sha256` (every zoo entry pins one) is checked by content: a freshly downloaded file whose
SHA-256 differs is refused (`ModelIntegrityError`) and removed from the Hub cache; a cached file that differs
is removed and treated as not cached. A cached file is found under any snapshot (say one `preload_from_hub`
fetched at `main`) when its blob is named by the expected hash, which is how the Hub cache names LFS blobs.
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                   RepositoryNotFoundError, RevisionNotFoundError)

from .. import settings
from .digest import file_sha256
from ..errors import ModelIntegrityError, ModelNotFoundError, ModelUnavailableError
from .zoo import UnknownModelError, ZooEntry, get_model, list_models

__all__ = ["HubRef", "ModelIntegrityError", "ModelUnavailableError", "availability", "cached_hub_file", "entry_ref",
           "fetch_from_hub", "hf_home", "hub_cache_dir", "hub_reachable", "is_available_offline", "is_offline",
           "parse_hub_ref", "resolve_entry", "resolve_source"]

HUB_SCHEME = "hf://"
DEFAULT_ETAG_TIMEOUT_S = 10.0
ProgressCallback = Callable[[int, "int | None"], None]

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_DOWNLOAD_TAKES_TQDM_CLASS = "tqdm_class" in inspect.signature(hf_hub_download).parameters


@dataclass(frozen=True)
class HubRef:
    """A file in a Hugging Face Hub model repo; `sha256`, when given, is the content it must have."""

    repo_id: str
    filename: str
    revision: str | None = None
    sha256: str | None = None

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}" + (f" (revision {self.revision})" if self.revision else "")

    @property
    def url(self) -> str:
        return f"{_endpoint()}/{self.repo_id}/resolve/{self.revision or 'main'}/{self.filename}"


def hf_home() -> Path:
    """`$HF_HOME`, read now (not at import) so a changed environment is honoured."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg) / "huggingface"


def hub_cache_dir() -> Path:
    """The Hub download cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    return hf_home() / "hub"


def is_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` asks us never to touch the network (read from the environment now)."""
    from .. import settings

    if os.environ.get("HF_HUB_OFFLINE") is None:
        return bool(hf_constants.HF_HUB_OFFLINE)
    return settings.flag("HF_HUB_OFFLINE")


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def _timeout_env(name: str, default: float) -> float:
    try:
        return max(0.1, float(os.environ.get(name, default)))
    except ValueError:
        return default


def hub_reachable(timeout: float | None = None) -> bool:
    """Quick TCP probe of the Hub endpoint, bounded by `timeout` (env `DRAGGAN_HUB_TIMEOUT`, default 3 s).

    huggingface_hub retries unreachable hosts for ~25 s before failing; probing first keeps an offline app
    responsive. DNS lookups can block beyond socket timeouts, hence the probe runs in a daemon thread. With a
    proxy configured the probe is skipped (the proxy, not us, decides reachability).
    """
    if any(os.environ.get(name) for name in _PROXY_VARS):
        return True
    timeout = settings.get().hub_timeout if timeout is None else timeout
    parsed = urllib.parse.urlparse(_endpoint())
    host = parsed.hostname
    if host is None:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="draggan-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def parse_hub_ref(source: str) -> HubRef | None:
    """Parse `owner/repo/path/file`, `hf://owner/repo/path/file` or a `https://huggingface.co/...` file URL."""
    text = source.strip()
    revision = None
    if text.startswith(("http://", "https://")):
        parsed = urllib.parse.urlparse(text)
        parts = [p for p in parsed.path.split("/") if p]
        if len(parts) < 5 or parts[2] not in ("resolve", "blob"):
            return None
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        return HubRef(repo_id, filename, None if revision == "main" else revision)
    if text.startswith(HUB_SCHEME):
        text = text[len(HUB_SCHEME):]
    parts = text.split("/")
    if len(parts) < 3 or any(not p or p in (".", "..") for p in parts) or "\\" in text:
        return None
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]), revision)


def entry_ref(entry: ZooEntry) -> HubRef:
    """The pinned Hub file (revision and SHA-256 included) of a Hub zoo entry."""
    assert not entry.is_local, f"{entry.key} is a bundled model, not a Hub file"
    return HubRef(entry.repo_id, entry.filename, entry.revision, entry.sha256)


_VERIFIED: set[tuple[str, int, int, str]] = set()
_VERIFIED_LOCK = threading.Lock()


def _content_matches(path: Path, sha256: str) -> bool:
    """Whether the file hashes to `sha256`; a file seen unchanged (path, size, mtime) is hashed once per process."""

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, sha256)
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            return True
    if file_sha256(path) != sha256:
        return False
    with _VERIFIED_LOCK:
        _VERIFIED.add(key)
    return True


def _remove_from_cache(path: Path) -> bool:
    """Delete a Hub-cache file (its snapshot link and the blob it points to); files elsewhere are left alone."""
    root = hub_cache_dir().resolve()
    targets = {path.parent.resolve() / path.name, path.resolve()}
    if not all(root in t.parents for t in targets):
        return False
    for target in targets:
        target.unlink(missing_ok=True)
    return True


def _snapshot_with_blob(ref: HubRef) -> Path | None:
    """A cached copy of the file under any snapshot whose blob is named by `ref.sha256` (Hub cache layout)."""
    repo_dir = hub_cache_dir() / f"models--{ref.repo_id.replace('/', '--')}" / "snapshots"
    if ref.sha256 is None or not repo_dir.is_dir():
        return None
    for candidate in sorted(repo_dir.glob(f"*/{ref.filename}")):
        if candidate.is_file() and candidate.resolve().name == ref.sha256:
            return candidate
    return None


def cached_hub_file(ref: HubRef) -> Path | None:
    """The file's path in the Hub cache, or None; never touches the network.

    With `ref.sha256` the file must have that content: a cached file that does not is removed (so the next
    fetch downloads it afresh) and None is returned.
    """
    cached = try_to_load_from_cache(ref.repo_id, ref.filename, cache_dir=str(hub_cache_dir()),
                                    revision=ref.revision)
    path = Path(cached) if isinstance(cached, str) and Path(cached).is_file() else _snapshot_with_blob(ref)
    if path is None or ref.sha256 is None:
        return path
    if _content_matches(path, ref.sha256):
        return path
    _remove_from_cache(path)
    return None


def _how_to_get(ref: HubRef) -> str:
    if is_offline():
        return (f"Offline mode is on (HF_HUB_OFFLINE=1), so nothing is downloaded: unset it to let the app "
                f"fetch the file, or download {ref.url} yourself and pass the local .pkl path instead.")
    return (f"Check that this machine can reach the Hub and try again (the file is then cached), or download "
            f"{ref.url} yourself and pass the local .pkl path instead.")


def _unavailable(ref: HubRef, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Model file '{ref.filename}' from Hugging Face Hub repo '{ref.repo_id}' is not available: {reason}. "
        + _how_to_get(ref))


def _check_download(ref: HubRef, path: Path) -> Path:
    """Refuse (and remove from the cache) a downloaded file whose content is not the pinned SHA-256."""
    if ref.sha256 is None or _content_matches(path, ref.sha256):
        return path

    actual = file_sha256(path)
    removed = _remove_from_cache(path)
    raise ModelIntegrityError(
        f"Model file '{ref.filename}' from Hugging Face Hub repo '{ref.repo_id}' was refused: its SHA-256 is "
        f"{actual[:12]}…, but the model registry pins {ref.sha256[:12]}… (a damaged download, or the file on "
        f"the Hub has changed). " + ("It was removed from the cache; try again." if removed else
                                     "The file was left where it is."))


def _progress_tqdm(progress: ProgressCallback) -> type:
    """A tqdm class that also reports (bytes done, bytes total) to `progress`, for UIs."""
    from tqdm.auto import tqdm

    class _ReportingTqdm(tqdm):
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return _ReportingTqdm


def fetch_from_hub(ref: HubRef, progress: ProgressCallback | None = None) -> Path:
    """Local path of a Hub file: from the cache, else downloaded; `ModelUnavailableError` when impossible."""
    cached = cached_hub_file(ref)
    if cached is not None:
        return cached
    if is_offline():
        raise _unavailable(ref, "it is not in the local cache and offline mode is on (HF_HUB_OFFLINE)")
    if not hub_reachable():
        raise _unavailable(ref, f"it is not in the local cache and the Hub ({_endpoint()}) cannot be reached")
    kwargs = {}
    if progress is not None and _DOWNLOAD_TAKES_TQDM_CLASS:
        kwargs["tqdm_class"] = _progress_tqdm(progress)
    try:
        path = hf_hub_download(repo_id=ref.repo_id, filename=ref.filename, revision=ref.revision,
                               cache_dir=str(hub_cache_dir()),
                               etag_timeout=_timeout_env("HF_HUB_ETAG_TIMEOUT", DEFAULT_ETAG_TIMEOUT_S), **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise _unavailable(ref, "the Hub could not be reached and the file is not cached") from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise _unavailable(ref, "the Hub has no such repo, revision or file") from e
    except Exception as e:
        raise _unavailable(ref, f"the download failed ({type(e).__name__}: {e})") from e
    return _check_download(ref, Path(path))


def resolve_entry(entry: ZooEntry, progress: ProgressCallback | None = None) -> Path:
    """Local file of a zoo entry: its bundled path, or the Hub file (downloaded if needed)."""
    if entry.is_local:
        path = entry.local_path
        if not path.exists():
            raise ModelUnavailableError(f"Model '{entry.key}' should be at {path}, but that file does not exist.")
        return path
    return fetch_from_hub(entry_ref(entry), progress)


def resolve_source(source: str | Path | ZooEntry, progress: ProgressCallback | None = None) -> Path:
    """Resolve a model source to a local file or converted-cache directory.

    Accepted, in this order: a `ZooEntry`; an `hf://` or `https://huggingface.co/` reference; an existing local
    path (.pkl, converted safetensors file or cache folder); a zoo key; a Hub reference `owner/repo/file.pkl`.
    """
    if isinstance(source, ZooEntry):
        return resolve_entry(source, progress)
    text = str(source)
    if text.startswith((HUB_SCHEME, "http://", "https://")):
        ref = parse_hub_ref(text)
        if ref is None:
            raise ModelNotFoundError(f"not a Hub file reference: {text[:200]!r} (expected hf://owner/repo/file.pkl)")
        return fetch_from_hub(ref, progress)
    path = Path(text).expanduser()
    if path.exists():
        return path
    try:
        return resolve_entry(get_model(text), progress)
    except UnknownModelError:
        pass
    ref = None if text.startswith(("/", ".", "~")) else parse_hub_ref(text)
    if ref is None:
        keys = ", ".join(e.key for e in list_models())
        raise ModelNotFoundError(
            f"No model file at {path.resolve()}. A model source is a path to a .pkl or converted model, "
            f"a zoo key ({keys}), or a Hub file such as DragGan/DragGan-Models/stylegan2-ffhq-512x512.pkl.")
    return fetch_from_hub(ref, progress)


def is_available_offline(entry: ZooEntry) -> bool:
    """True when the entry can be loaded without network: a bundled file, or a Hub file already cached."""
    if entry.is_local:
        return entry.local_path.exists()
    return cached_hub_file(entry_ref(entry)) is not None


def availability(entry: ZooEntry, hub_online: bool | Callable[[], bool] | None = None) -> str:
    """Where a model stands here: "bundled", "missing", "cached", "download needed", "unavailable offline"
    (HF_HUB_OFFLINE is on) or "not reachable" (the Hub does not answer). `hub_online` is asked only for a Hub
    file that is not cached (default: `hub_reachable`), so a caller listing many models can probe once; a
    caller that already knows passes the answer (a bool, which offline mode does not override).
    """
    if entry.is_local:
        return "bundled" if entry.local_path.exists() else "missing"
    if cached_hub_file(entry_ref(entry)) is not None:
        return "cached"
    if isinstance(hub_online, bool):
        return "download needed" if hub_online else "unavailable offline" if is_offline() else "not reachable"
    if is_offline():
        return "unavailable offline"
    return "download needed" if (hub_online or hub_reachable)() else "not reachable"


USABLE = ("bundled", "cached", "download needed")   # the `availability` states a model can be loaded in


def unavailable_reason(entry: ZooEntry, state: str) -> str:
    """Why a model in `availability` state `state` cannot be used here ("" when it can), for the picker."""
    return {"missing": f"missing file {entry.local_path}",
            "unavailable offline": "unavailable offline: not cached, and offline mode is on (HF_HUB_OFFLINE=1)",
            "not reachable": "not reachable: not cached, and the Hugging Face Hub does not answer"}.get(state, "")
