"""Which models the app offers, and a per-process cache of loaded generators.

Choices come from the zoo (`checkpoints/zoo.json`) and from `DRAGGAN_EXTRA_MODELS`, a list of local model
files separated by the OS path separator (`:` on Linux/macOS, `;` on Windows), each optionally prefixed by a
display name: `DRAGGAN_EXTRA_MODELS="Tiny=/data/tiny.pkl:/data/cats.pkl"`. A zoo model whose file is neither
bundled nor in the Hub cache is offered only when the Hub can be reached; otherwise it is listed as
unavailable, so an offline app still starts with whatever it has.

Generators are shared read-only by every session in the process; `GeneratorCache` keeps the most recently
used few (env `DRAGGAN_MODEL_CACHE`, default 2) and loads each source at most once at a time.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import threading
from pathlib import Path
from typing import Callable

import torch

from .. import settings
from ..errors import UploadError

MODEL_SUFFIXES = (".pkl", ".safetensors")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Which generator: `source` as `load_generator` takes it (zoo key, local file, Hub file or converted
    folder) and the label shown to users. `private` models (a photo's tuned copy) are never listed. `drag_lr`
    is the step size the registry recommends for it (None: the app's default); it travels with the model and
    takes no part in comparing two references."""

    source: str
    label: str
    private: bool = False
    drag_lr: float | None = dataclasses.field(default=None, compare=False)

    @property
    def lr(self) -> float:
        """The step size a drag on this model starts with: the recommended one, else the app's default."""
        from ..engine import DragConfig
        return self.drag_lr if self.drag_lr is not None else DragConfig.lr


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker: what the user sees (`label`) and what `load_generator` gets (`source`)."""

    source: str
    label: str
    available: bool
    reason: str = ""
    drag_lr: float | None = None  # recommended drag step size (zoo `drag_lr`); None: the app's default


def extra_model_choices(value: str | None = None) -> list[ModelChoice]:
    """Parse `DRAGGAN_EXTRA_MODELS` (or `value`) into choices; missing files are listed as unavailable."""
    text = settings.get().extra_models if value is None else value
    choices = []
    for item in (part.strip() for part in text.split(os.pathsep)):
        if not item:
            continue
        name, sep, path = item.partition("=")
        if not sep:
            name, path = "", item
        file = Path(path.strip()).expanduser()
        label = name.strip() or file.stem
        exists = file.exists()
        choices.append(ModelChoice(source=str(file.resolve()) if exists else str(file), label=f"{label} (local)",
                                   available=exists, reason="" if exists else f"no file at {file}"))
    return choices


def zoo_choices(hub_online: bool | None = None) -> list[ModelChoice]:
    """Zoo models, labelled with name and resolution, as `hub.availability` finds them here (the Hub probed at
    most once, and only for a file that is not cached; `hub_online` answers it instead)."""
    from ..checkpoints import hub, zoo

    probe = functools.cache(hub.hub_reachable) if hub_online is None else hub_online
    choices = []
    for entry in zoo.list_models():
        size = f"{entry.height}×{entry.width}" if entry.height != entry.width else f"{entry.height}px"
        label = entry.name if str(entry.height) in entry.name else f"{entry.name} ({size})"
        state = hub.availability(entry, probe)
        if state == "download needed":
            label += f", ~{entry.approx_size_mb:.0f} MB download" if entry.approx_size_mb else ", download"
        choices.append(ModelChoice(source=entry.key, label=label, available=state in hub.USABLE,
                                   reason=hub.unavailable_reason(entry, state),
                                   drag_lr=entry.drag_lr if state != "missing" else None))
    return choices


def model_choices(hub_online: bool | None = None) -> list[ModelChoice]:
    """Extra (local) models first, then the zoo."""
    return extra_model_choices() + zoo_choices(hub_online)


def check_upload(path: str | os.PathLike, max_mb: float) -> Path:
    """Validate an uploaded model file's type and size; `UploadError` (a refusal) otherwise."""
    file = Path(path)
    if file.suffix.lower() not in MODEL_SUFFIXES:
        raise UploadError(f"'{file.name}' is not a model file: upload a StyleGAN network pickle (.pkl) or a "
                         f"converted .safetensors model")
    size_mb = file.stat().st_size / 2**20
    if size_mb > max_mb:
        raise UploadError(f"'{file.name}' is {size_mb:.0f} MB, more than this app accepts ({max_mb:.0f} MB; "
                         f"set DRAGGAN_MAX_UPLOAD_MB to change it)")
    return file


class GeneratorCache:
    """A small thread-safe LRU of loaded generators keyed by (source, device)."""

    def __init__(self, max_items: int | None = None,
                 loader: Callable[..., torch.nn.Module] | None = None) -> None:
        if max_items is None:
            max_items = settings.get().model_cache
        assert max_items >= 1
        self.max_items = max_items
        self._loader = loader
        self._items: collections.OrderedDict[tuple[str, str], torch.nn.Module] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._pinned: set[tuple[str, str]] = set()

    def _load(self, source: str, device: torch.device, progress: Callable[[int, int | None], None] | None):
        if self._loader is not None:
            return self._loader(source, device=device)
        from ..checkpoints.loader import load_generator
        return load_generator(source, device=device, progress=progress)

    def get(self, source: str, device: torch.device,
            progress: Callable[[int, int | None], None] | None = None) -> torch.nn.Module:
        """The generator for `source` on `device`, loaded on first use (once, however many callers wait)."""
        key = (str(source), str(device))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            G = self._load(str(source), device, progress)
            G.requires_grad_(False)
            with self._lock:
                self._items[key] = G
                self._items.move_to_end(key)
                evictable = [k for k in self._items if k not in self._pinned and k != key]
                while len(self._items) > self.max_items + len(self._pinned) and evictable:
                    del self._items[evictable.pop(0)]
                self._loading.pop(key, None)
            return G

    def loaded(self, source: str, device: torch.device | str) -> torch.nn.Module | None:
        """The generator for `source` on `device` when it is loaded, else None (never loads)."""
        with self._lock:
            return self._items.get((str(source), str(device)))

    def pin(self, source: str, device: torch.device) -> torch.nn.Module:
        """Load `source` and keep it for the life of the process (never evicted): the preloaded models."""
        G = self.get(source, device)
        with self._lock:
            self._pinned.add((str(source), str(device)))
        return G

    def forget(self, source: str) -> None:
        """Drop every loaded copy of `source` (a private model whose session ended)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == str(source)]:
                del self._items[key]

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_SHARED: GeneratorCache | None = None
_SHARED_LOCK = threading.Lock()


def shared_cache() -> GeneratorCache:
    """The process-wide generator cache (forked GPU workers inherit what the server loaded into it)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = GeneratorCache()
        return _SHARED


def set_shared_cache(cache: GeneratorCache) -> GeneratorCache:
    """Make `cache` the process-wide generator cache (the app does this once at start-up)."""
    global _SHARED
    with _SHARED_LOCK:
        _SHARED = cache
        return cache


def private_models_dir() -> Path:
    from ..checkpoints.cache import converted_cache_dir
    return converted_cache_dir() / "private"


def store_private_model(G: torch.nn.Module, label: str, note: dict | None = None) -> ModelRef:
    """Write a session's own generator (a photo's tuned copy) to the converted-model cache under its content
    key, so that whichever process runs the next step can read it; returns its `ModelRef`."""
    import tempfile
    import uuid

    from ..checkpoints.digest import file_sha256
    from ..inversion.export import save_tuned_generator

    root = private_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    weights = save_tuned_generator(G, tmp, note=note)
    folder = root / f"{file_sha256(weights)[:32]}-{uuid.uuid4().hex[:8]}"  # content key + this session's copy
    tmp.rename(folder)
    return ModelRef(source=str(folder), label=label, private=True)


def forget_private_model(ref: ModelRef) -> None:
    """Delete a private model's files and loaded copies (its session ended or replaced it)."""
    import shutil

    if not ref.private:
        return
    shared_cache().forget(ref.source)
    folder = Path(ref.source)
    if folder.parent == private_models_dir():
        shutil.rmtree(folder, ignore_errors=True)

