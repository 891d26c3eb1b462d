"""The app's settings: every `DRAGGAN_*` environment variable, read and validated once, in one frozen object.

`get()` parses the environment on first use and returns the same `Settings` afterwards, so a variable changed
while the process runs has no effect until `reload()` (tests call it after `monkeypatch.setenv`). An unset or
empty variable takes the field's default; any other value must parse as the field's type and lie in its
range, else `SettingsError` names the variable, the accepted values and what was found. Nothing else in the
package reads a `DRAGGAN_*` variable.

Flags (on/off variables: the `bool` fields, and the platform's `HF_HUB_OFFLINE` and `SPACES_ZERO_GPU`, which
`flag()` reads from the environment each time it is asked) have one parser: `1`, `true`, `yes`, `on` are on;
`0`, `false`, `no`, `off` and unset or empty are off (any case, spaces ignored); any other value is a
`SettingsError` naming the variable. `get()` checks the platform flags too, so a wrong one stops the app at
start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import SettingsError

PREFIX = "DRAGGAN_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
PLATFORM_FLAGS = ("HF_HUB_OFFLINE", "SPACES_ZERO_GPU")   # set by huggingface_hub's users and by Spaces


def parse_flag(env: str, raw: str | None) -> bool:
    """The one boolean parser (see the module docstring); `SettingsError` naming `env` for any other word."""
    word = (raw or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{env} must be one of {', '.join(TRUE_WORDS)} (on) or {', '.join(w for w in FALSE_WORDS if w)} "
                        f"(off), got {raw!r}")


def flag(env: str, environ: Mapping[str, str] | None = None) -> bool:
    """The platform flag `env` (one of `PLATFORM_FLAGS`) as it is now in the environment."""
    return parse_flag(env, (os.environ if environ is None else environ).get(env))


def _var(env: str, kind: type, default: Any, lo: float | None = None, hi: float | None = None) -> Any:
    """A settings field read from `env`, parsed as `kind` (int, float, str or Path) and bounded by [lo, hi]."""
    return dataclasses.field(default=default, metadata=dict(env=env, kind=kind, lo=lo, hi=hi))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Deployment knobs of the app and the loaders; one field per `DRAGGAN_*` variable (see docs/app.md)."""

    # Models.
    # DRAGGAN_DEFAULT_MODEL, default "" (= ffhq-512 on a GPU with the Hub or a cached copy, else the bundled
    # cartoon model; see checkpoints/default_model.py): the model a new page starts on.
    default_model: str = _var("DRAGGAN_DEFAULT_MODEL", str, "")
    # DRAGGAN_EXTRA_MODELS, default "": local model files offered in the picker, `os.pathsep`-separated, each
    # `path` or `Name=path` (the operator's list, never a visitor's).
    extra_models: str = _var("DRAGGAN_EXTRA_MODELS", str, "")
    # DRAGGAN_MODEL_CACHE, default 2: loaded generators the process keeps (shared by all sessions).
    model_cache: int = _var("DRAGGAN_MODEL_CACHE", int, 2, 1, 64)
    # DRAGGAN_MAX_UPLOAD_MB, default 2048: largest model upload accepted, MB.
    max_upload_mb: float = _var("DRAGGAN_MAX_UPLOAD_MB", float, 2048.0, 1.0, 1e6)
    # DRAGGAN_CACHE, default None (= $HF_HOME/draggan-converted): folder of the converted-model cache.
    cache_dir: Path | None = _var("DRAGGAN_CACHE", Path, None)
    # DRAGGAN_CACHE_MAX_MB, default 4096: size bound of the converted cache (least recently used entries go first).
    cache_max_mb: float = _var("DRAGGAN_CACHE_MAX_MB", float, 4096.0, 1e-4, 1e8)
    # DRAGGAN_CONVERT_MAX_RSS_MB, default 2560: peak resident memory of the process converting an uploaded model.
    convert_max_rss_mb: float = _var("DRAGGAN_CONVERT_MAX_RSS_MB", float, 2560.0, 64.0, 1e6)
    # DRAGGAN_CONVERT_WALL_S / DRAGGAN_CONVERT_CPU_S, default 120 / 120: wall and CPU seconds of that conversion.
    convert_wall_s: float = _var("DRAGGAN_CONVERT_WALL_S", float, 120.0, 1.0, 3600.0)
    convert_cpu_s: float = _var("DRAGGAN_CONVERT_CPU_S", float, 120.0, 1.0, 3600.0)
    # DRAGGAN_CONVERT_CONCURRENCY, default 1: uploaded models converted at the same time.
    convert_concurrency: int = _var("DRAGGAN_CONVERT_CONCURRENCY", int, 1, 1, 16)
    # DRAGGAN_HUB_TIMEOUT, default 3: seconds the Hub reachability probe may take before the app goes offline.
    hub_timeout: float = _var("DRAGGAN_HUB_TIMEOUT", float, 3.0, 0.1, 120.0)
    # Work per visitor.
    # DRAGGAN_CONCURRENCY, default None (= 4 on CUDA, else 2): drags / inversions that may run at once.
    concurrency: int | None = _var("DRAGGAN_CONCURRENCY", int, None, 1, 256)
    # DRAGGAN_TORCH_THREADS, default None (= max(1, cores // concurrency)): torch's CPU threads, set once at
    # start-up for the whole process, so that concurrent jobs x threads stays within the cores.
    torch_threads: int | None = _var("DRAGGAN_TORCH_THREADS", int, None, 1, 1024)
    # DRAGGAN_MALLOC_ARENAS, default 1 (0 = glibc's default): malloc arenas of the process; with one, every thread
    # allocates from the main heap, which serves blocks of any size without faulting them in again (server/memory.py).
    malloc_arenas: int = _var("DRAGGAN_MALLOC_ARENAS", int, 1, 0, 1024)
    # DRAGGAN_MALLOC_KEEP_MB, default 1024 (0 = glibc's defaults): free heap memory glibc keeps for reuse between
    # steps instead of handing it back and faulting it in again (draggan/server/memory.py).
    malloc_keep_mb: int = _var("DRAGGAN_MALLOC_KEEP_MB", int, 1024, 0, 65536)
    # DRAGGAN_QUEUE_MAX, default 64: requests that may wait in the queue; past it a visitor is refused at once.
    queue_max: int = _var("DRAGGAN_QUEUE_MAX", int, 64, 1, 100000)
    # Sessions and their files.
    # DRAGGAN_TEMP_DIR, default None (= $TMPDIR/draggan): the one folder for session files, exports and Gradio's
    # copies of uploads and downloads (GRADIO_TEMP_DIR points under it unless set).
    temp_dir: Path | None = _var("DRAGGAN_TEMP_DIR", Path, None)
    # DRAGGAN_SESSION_TTL_S, default 3600: a session idle this long is released (its files and memory freed).
    session_ttl_s: float = _var("DRAGGAN_SESSION_TTL_S", float, 3600.0, 1.0, 7 * 86400.0)
    # DRAGGAN_CLOSED_SESSION_TTL_S, default 60: a session whose tab closed is released after this long.
    closed_session_ttl_s: float = _var("DRAGGAN_CLOSED_SESSION_TTL_S", float, 60.0, 0.0, 86400.0)
    # DRAGGAN_FILE_TTL_S, default 3600: Gradio's copies of uploads and downloads are deleted at this age.
    file_ttl_s: float = _var("DRAGGAN_FILE_TTL_S", float, 3600.0, 1.0, 7 * 86400.0)
    # DRAGGAN_MAX_PHOTO_MP, default 50: largest photo accepted for inversion, megapixels.
    max_photo_mp: float = _var("DRAGGAN_MAX_PHOTO_MP", float, 50.0, 0.01, 1000.0)
    # ZeroGPU time slots (`spaces.GPU(duration=...)`), seconds.
    # DRAGGAN_FORKED_GPU, default off: on runs every GPU call in a forked, pickling worker, as ZeroGPU does
    # (draggan/server/forked.py), to try the app under ZeroGPU's contract on any machine.
    forked_gpu: bool = _var("DRAGGAN_FORKED_GPU", bool, False)
    # DRAGGAN_GPU_DURATION, default 120: slot of one drag call.
    gpu_duration: int = _var("DRAGGAN_GPU_DURATION", int, 120, 1, 3600)
    # DRAGGAN_GPU_INVERT_DURATION, default 600: slot of one photo inversion.
    gpu_invert_duration: int = _var("DRAGGAN_GPU_INVERT_DURATION", int, 600, 1, 3600)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse and validate every field from `environ` (default `os.environ`)."""
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(field.metadata["env"], "").strip()
            if raw:
                values[field.name] = _parse(field.metadata, raw)
        return cls(**values)

    def concurrency_for(self, device_type: str) -> int:
        """Drags (and inversions) that may run at once on `device_type`: the setting, else 4 on CUDA, 2 elsewhere."""
        if self.concurrency is not None:
            return self.concurrency
        return 4 if device_type == "cuda" else 2


def _parse(meta: Mapping[str, Any], raw: str) -> Any:
    env, kind, lo, hi = meta["env"], meta["kind"], meta["lo"], meta["hi"]
    if kind is str:
        return raw
    if kind is Path:
        return Path(raw).expanduser()
    if kind is bool:
        return parse_flag(env, raw)
    what = "an integer" if kind is int else "a number"
    bounds = f" between {lo:g} and {hi:g}" if lo is not None else ""
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{env} must be {what}{bounds}, got {raw!r}") from None
    if value != value or (lo is not None and not lo <= value <= hi):
        raise SettingsError(f"{env} must be {what}{bounds}, got {raw!r}")
    return value


@functools.lru_cache(maxsize=1)
def get() -> Settings:
    """The process's settings, parsed from the environment on the first call (the platform flags checked)."""
    for env in PLATFORM_FLAGS:
        flag(env)
    return Settings.from_env()


def reload() -> Settings:
    """Forget the parsed settings and read the environment again (for tests and a restarted app)."""
    get.cache_clear()
    return get()


def env_names() -> tuple[str, ...]:
    """Every environment variable `Settings` reads, in field order."""
    return tuple(field.metadata["env"] for field in dataclasses.fields(Settings))
