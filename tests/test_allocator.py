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

# Buffers of 8, 9, ..., 30 MB from glibc's malloc (not numpy's, which may ask for huge pages), each written once
# and freed, as a step's activations of changing sizes are: with glibc's defaults every one above the (rising)
# mmap threshold is a fresh mapping whose pages fault in again (measured: 111,895 faults of 111,872 pages; kept:
# 7,666, the largest buffer's).
_WORKLOAD = textwrap.dedent("""
    import ctypes, json, resource, sys
    from draggan.server.memory import keep_heap
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    took = keep_heap(int(sys.argv[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for mb in range(8, 31):
        buf = libc.malloc(mb * 2 ** 20)
        ctypes.memset(buf, 1, mb * 2 ** 20)
        libc.free(buf)
    print(json.dumps({"took": took, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
""")


def _faults(keep_mb: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _WORKLOAD, str(keep_mb)], capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_kept_heap_reuses_a_steps_blocks_instead_of_faulting_them_in_again():
    default, kept = _faults(0), _faults(1024)
    assert default["took"] is False and kept["took"] is True
    pages = sum(range(8, 31)) * 2 ** 20 // 4096          # every buffer's pages, faulted in afresh
    assert default["faults"] > 0.8 * pages, default
    assert kept["faults"] < 0.25 * pages, (kept, default)  # only the largest buffer's pages, about 30 / 437


def test_keep_heap_off_and_elsewhere_does_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    assert memory.keep_heap(0) is False and calls == []
    assert memory.keep_heap(1024) is True
    assert dict(calls) == {memory.M_MMAP_THRESHOLD: 32 * 2 ** 20, memory.M_TRIM_THRESHOLD: 2 ** 31 - 1,
                           memory.M_TOP_PAD: 2 ** 30}


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
    assert seen == [(2, 256)]
