"""Convert an untrusted model file (a visitor's upload) in a separate, resource-limited process.

`convert_untrusted(path)` hashes the file; when the converted-model cache already holds that content it
returns the entry at once. Otherwise it starts `python -m draggan.checkpoints.sandbox` (fork + exec: a fresh
interpreter that shares no memory with the server) which reads the file — a network pickle through the
bounded unpickler, or a lone `.safetensors` whose config is in its metadata — builds the generator, checks
it and writes it into the safetensors cache. The server process then only ever reads safetensors.

Limits (`SandboxLimits`, settings with defaults):
- memory: peak resident memory of the child: the kernel's high-water mark `VmHWM` in `/proc/<pid>/status`,
  polled every 20 ms by the parent, which kills the child once it passes `DRAGGAN_CONVERT_MAX_RSS_MB`
  (default 2560); a spike between two polls still shows in the mark. Address-space limits (RLIMIT_AS) are
  not used: torch alone maps gigabytes of virtual memory it never touches. (`ru_maxrss` from `wait4` is
  not used either: Linux carries the parent's peak into a vfork+exec'd child.)
- CPU time: RLIMIT_CPU in the child, set before it opens the file (`DRAGGAN_CONVERT_CPU_S`, default 120).
- wall time: the parent kills the child after `DRAGGAN_CONVERT_WALL_S` (default 120).
- output: RLIMIT_FSIZE of 4x the input plus 64 MB; no core dumps.
At most `DRAGGAN_CONVERT_CONCURRENCY` (default 1) conversions run at a time in one server process.
Every refusal is a `ModelFormatError` or `UnsafePickleError` of one line naming the file by its base name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .. import settings
from . import cache, model_folder
from .builders import generator_config, generator_from_state
from ..errors import ModelFormatError, UnsafePickleError

_REFUSED_EXIT = 3
_ERRORS = {"ModelFormatError": ModelFormatError, "UnsafePickleError": UnsafePickleError}
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Hard limits on one conversion: peak RSS (MB), wall time and CPU time (s), RSS poll interval (s)."""

    max_rss_mb: float = 2560.0
    wall_s: float = 120.0
    cpu_s: float = 120.0
    poll_s: float = 0.02

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
                raise ValueError(f"SandboxLimits.{f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_env(cls) -> "SandboxLimits":
        """Limits from the settings `DRAGGAN_CONVERT_MAX_RSS_MB`, `DRAGGAN_CONVERT_WALL_S`, `DRAGGAN_CONVERT_CPU_S`."""
        config = settings.get()
        return cls(max_rss_mb=config.convert_max_rss_mb, wall_s=config.convert_wall_s, cpu_s=config.convert_cpu_s)


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What one `convert_report` call did: the entry, and the child's wall time and peak RSS (0 if cached)."""

    entry: Path
    cached: bool
    wall_s: float
    peak_rss_mb: float


_slots_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None


def _conversion_slots() -> threading.BoundedSemaphore:
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(settings.get().convert_concurrency)
        return _slots


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of `pid` since its exec, in MB (0 where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _last_json_line(data: bytes) -> dict[str, Any] | None:
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def convert_report(path: str | Path, name: str | None = None, limits: SandboxLimits | None = None) -> ConversionReport:
    """`convert_untrusted`, also returning how long the child ran and its peak resident memory."""
    path = Path(path)
    name = Path(name or path.name).name
    limits = limits or SandboxLimits.from_env()
    try:
        sha = cache.file_sha256(path)
    except OSError as e:
        raise ModelFormatError(f"{name} could not be read ({type(e).__name__})") from None
    entry = cache.converted_cache_dir() / sha
    if model_folder.is_model_folder(entry):
        cache.touch(entry)
        return ConversionReport(entry, True, 0.0, 0.0)
    with _conversion_slots():
        if model_folder.is_model_folder(entry):
            cache.touch(entry)
            return ConversionReport(entry, True, 0.0, 0.0)
        return _run_child(path, name, sha, entry, limits)


def convert_untrusted(path: str | Path, name: str | None = None, limits: SandboxLimits | None = None) -> Path:
    """Convert an untrusted model file in a limited child process; return its converted-cache entry folder.

    `name` is what messages call the file (default: its base name; never a folder). Load the result with
    `load_generator(entry)`, which reads only safetensors + JSON. Raises `ModelFormatError` (malformed, too
    big, too slow, killed) or `UnsafePickleError` (refused content), each one line.
    """
    return convert_report(path, name, limits).entry


def _run_child(path: Path, name: str, sha: str, entry: Path, limits: SandboxLimits) -> ConversionReport:
    fsize = 4 * path.stat().st_size + (64 << 20)  # float32 weights from a float16 pickle: at most 2x, plus margin
    command = [sys.executable, "-m", "draggan.checkpoints.sandbox", str(path), sha, name,
               str(int(limits.cpu_s + 0.999)), str(fsize)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=_child_env(),
                                close_fds=True, start_new_session=True)
        peak, killed_for, status = 0.0, "", 0
        try:
            while True:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
                if pid:
                    break
                peak = max(peak, _peak_rss_mb(proc.pid))
                if peak > limits.max_rss_mb:
                    killed_for = "memory"
                elif time.monotonic() - start > limits.wall_s:
                    killed_for = "time"
                if killed_for:
                    proc.kill()
                    _, status = os.waitpid(proc.pid, 0)
                    break
                time.sleep(limits.poll_s)
        except BaseException:
            proc.kill()
            os.waitpid(proc.pid, 0)
            raise
        finally:
            proc.returncode = 0  # reaped above with waitpid; keep Popen from waiting again
        wall = time.monotonic() - start
        out.seek(0)
        result = _last_json_line(out.read()[-65536:])
    code = os.waitstatus_to_exitcode(status)
    if killed_for == "memory":
        raise ModelFormatError(f"{name}: converting it needed more than {limits.max_rss_mb:.0f} MB of memory; "
                               "refused")
    if killed_for == "time":
        raise ModelFormatError(f"{name}: converting it took longer than {limits.wall_s:.0f} s; refused")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        raise ModelFormatError(f"{name}: converting it used more than {limits.cpu_s:.0f} s of CPU time; refused")
    if code == -signal.SIGXFSZ:
        raise ModelFormatError(f"{name}: its converted weights would be larger than {fsize >> 20} MB; refused")
    if code == _REFUSED_EXIT and result and result.get("error") in _ERRORS:
        raise _ERRORS[result["error"]](str(result.get("message", ""))[:500])
    if code != 0 or not model_folder.is_model_folder(entry):
        raise ModelFormatError(f"{name}: the model converter failed (exit status {code})")
    reported = result.get("peak_rss_mb") if result else None
    if isinstance(reported, (int, float)):
        peak = max(peak, float(reported))
    return ConversionReport(entry, False, wall, peak)


# ---------------------------------------------------------------- child side


def _child_limits(cpu_s: int, fsize: int) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _generator_from_safetensors(path: Path, name: str):
    """Build a generator from a lone safetensors upload whose config is in its metadata (child side)."""
    import safetensors
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            dtypes = {key: f.get_slice(key).get_dtype() for key in f.keys()}
    except Exception as e:
        raise ModelFormatError(f"{name} is not a readable safetensors file ({type(e).__name__})") from None
    bad = sorted(key for key, dtype in dtypes.items() if dtype not in _FLOAT_DTYPES)
    if bad:
        raise ModelFormatError(f"{name}: tensor {bad[0][:80]!r} is {dtypes[bad[0]]}, not a float type")
    return generator_from_state(model_folder.metadata_config(metadata, name), model_folder.load_state(path), name)


def _child_main(argv: list[str]) -> int:
    path, sha, name, cpu_s, fsize = Path(argv[0]), argv[1], argv[2], int(argv[3]), int(argv[4])
    _child_limits(cpu_s, fsize)
    import torch
    torch.set_num_threads(1)
    from .loader import generator_from_pickle
    try:
        if model_folder.is_model_folder(path):
            G = _generator_from_safetensors(path, name)
        else:
            G = generator_from_pickle(path, name=name)
        cache.save(G, generator_config(G), path, sha)
    except (ModelFormatError, UnsafePickleError) as e:
        print(json.dumps({"error": type(e).__name__, "message": " ".join(str(e).split())[:500]}), flush=True)
        return _REFUSED_EXIT
    print(json.dumps({"ok": True, "peak_rss_mb": _peak_rss_mb(os.getpid())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
