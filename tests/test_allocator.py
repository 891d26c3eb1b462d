"""glibc's allocator as the app sets it at start-up (draggan/server/memory.py): blocks of a step reused from the
heap instead of faulted in afresh, and the setting that turns it off."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
import textwrap

import pytest

from draggan import settings
from draggan.errors import SettingsError
from draggan.server import memory

GLIBC = sys.platform.startswith("linux") and "libc.so.6" in str(ctypes.util.find_library("c"))

# Buffers of 8, 9, ..., 30 MB and of 33, 48 and 70 MB (a 128-channel activation at 256 px is 32 MB, a 64-channel
# one at 512 px 64 MB) from glibc's malloc (not numpy's, which may ask for huge pages), each written once and
# freed, as a step's activations of changing sizes are, in a worker thread as the app's events run. With glibc's
# defaults every one above the (rising) mmap threshold is a fresh mapping whose pages fault in again; with the
# heap kept but glibc's mmap and a thread's own arena, those above 32 MB (and above 64 MB, which a thread's
# arena maps whatever the settings) still do. Kept, with the app's one arena: only the first round faults.
_SIZES_MB = [*range(8, 31), 33, 48, 70]
_WORKLOAD = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from draggan.server.memory import tune_allocator
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    tune_allocator(int(sys.argv[1]), int(sys.argv[2]))
    faults = []
    def rounds():
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            for mb in %r:
                buf = libc.malloc(mb * 2 ** 20)
                ctypes.memset(buf, 1, mb * 2 ** 20)
                libc.free(buf)
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    worker = threading.Thread(target=rounds)
    worker.start()
    worker.join()
    print(json.dumps({"faults": faults}))
""" % _SIZES_MB)


def _faults(arenas: int, keep_mb: int) -> list[int]:
    """Page faults of each of three rounds of the workload in a worker thread."""
    out = subprocess.run([sys.executable, "-c", _WORKLOAD, str(arenas), str(keep_mb)], capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])["faults"]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_heap_reuses_a_steps_blocks_instead_of_faulting_them_in_again():
    pages = sum(_SIZES_MB) * 2 ** 20 // 4096             # every buffer's pages, faulted in afresh
    large = sum(mb for mb in _SIZES_MB if mb > 32) * 2 ** 20 // 4096
    default = _faults(0, 0)
    assert default[0] > 0.8 * pages and min(default[1:]) > 0.8 * large, default   # the threshold rises to 32 MB
    kept = _faults(settings.get().malloc_arenas, settings.get().malloc_keep_mb)
    assert max(kept[1:]) < 0.02 * pages, (kept, default)    # the first round grew the heap; later rounds reuse it
    own_arena = _faults(2, settings.get().malloc_keep_mb)   # a worker thread on an arena of its own
    assert min(own_arena[1:]) > 0.8 * 70 * 2 ** 20 // 4096, own_arena   # maps its 70 MB block afresh: why one arena


def test_keep_heap_off_and_elsewhere_does_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    assert memory.keep_heap(0) is False and calls == []
    assert memory.keep_heap(1024) is True
    assert dict(calls) == {memory.M_MMAP_THRESHOLD: 32 * 2 ** 20, memory.M_MMAP_MAX: 0,
                           memory.M_TRIM_THRESHOLD: 2 ** 31 - 1, memory.M_TOP_PAD: 2 ** 30}


def test_the_setting_is_bounded(monkeypatch):
    monkeypatch.setenv("DRAGGAN_MALLOC_KEEP_MB", "-1")
    with pytest.raises(SettingsError, match="DRAGGAN_MALLOC_KEEP_MB"):
        settings.reload()
    monkeypatch.setenv("DRAGGAN_MALLOC_KEEP_MB", "0")
    assert settings.reload().malloc_keep_mb == 0
    monkeypatch.delenv("DRAGGAN_MALLOC_KEEP_MB")
    assert settings.reload().malloc_keep_mb == 1024


def test_the_app_tunes_the_allocator_at_start_up(monkeypatch):
    from draggan.service import studio as studio_module

    seen = []
    monkeypatch.setattr(memory, "tune_allocator", lambda arenas, keep: seen.append((arenas, keep)))
    monkeypatch.setattr(studio_module, "apply_thread_policy", lambda policy: None)
    monkeypatch.setenv("DRAGGAN_MALLOC_KEEP_MB", "256")
    settings.reload()
    try:
        studio_module.Studio.apply_thread_policy(type("S", (), {"policy": None})())
    finally:
        monkeypatch.delenv("DRAGGAN_MALLOC_KEEP_MB")
        settings.reload()
    assert seen == [(1, 256)]
