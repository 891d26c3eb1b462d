"""Hand freed heap memory back to the system after a session is released (glibc's `malloc_trim`).

A released session frees its frames, snapshots and buffers, but glibc keeps the freed pages of its arenas
mapped, so the server's resident memory stays at its peak (issue 11: 874 → 1326 MB, not given back when
idle). `malloc_trim(0)` returns the free pages at the top of every arena and, since glibc 2.8, the free
whole pages inside them. Elsewhere (musl, macOS, Windows) there is no such call and `trim_memory` does nothing.

Each thread that allocates can also get its own glibc arena (up to 8 per core), and the app runs every
event in a worker thread, so freed memory ends up scattered over many arenas that never shrink as a whole.
`limit_arenas(n)` caps them (`mallopt(M_ARENA_MAX, n)`, `DRAGGAN_MALLOC_ARENAS`, at start-up). Measured with
`bench/soak.py`-style rounds of 60 visits by 4 concurrent visitors after one warm-up visit (resident memory
growth after 180 visits): default arenas, trimming +83 MB; 2 arenas, no trimming +75 MB; 2 arenas and
trimming +30 MB, flat over the last 60 visits. The default is one arena, the main heap, for the reason below.

A CPU drag or inversion step allocates and frees activations of a few MB to tens of MB each. By default glibc
serves such blocks with a fresh `mmap` (above its mmap threshold, 128 kB rising to at most 32 MB) and hands
free memory at the top of the heap back at once (trim threshold), so every step faults the same pages in
again and a large part of its CPU time is the kernel zeroing pages. `keep_heap(mb)` (`DRAGGAN_MALLOC_KEEP_MB`,
default 1024, at start-up) serves every block from the heap (no `mmap` at all: the threshold cannot rise
above 32 MB, and a 128-channel activation at 256 px is 32 MB, a 64-channel one at 512 px 64 MB), grows the
heap `mb` MB at a time and keeps up to 2 × `mb` MB of it free for reuse; `malloc_trim` still hands it all back
when a session is released. A thread's own arena grows in heaps of at most 64 MB and maps any larger block
afresh whatever the settings, so the app runs with one arena (`DRAGGAN_MALLOC_ARENAS=1`): every thread
allocates from the main heap, whose blocks have no such limit.
Measured on 2 cores, one torch thread, the Fast photo preset at 512 px with LPIPS, run in a worker thread as
the app runs it (`bench/photo_presets.py`): glibc's defaults for blocks above 32 MB and 2 arenas 73.3 / 68.6 s
(first / second inversion of the process; 14.1 / 9.2 s of it in the kernel); every block from the heap and
one arena 68.2 / 60.9 s (6.4 / 0.0 s in the kernel: the first inversion grows the heap once). A projection
step at 256 px faults nothing in after the first; a tuning step at 512 px went from 5.6 to 3.7 CPU-s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


# glibc's mallopt parameters
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -3, -4, -8
MMAP_THRESHOLD_MAX = 32 * 2 ** 20   # the largest mmap threshold glibc accepts on 64-bit


def _mallopt(param: int, value: int) -> bool:
    """glibc's `mallopt(param, value)`; True if the C library took it (False elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(param, int(value)))
    except (OSError, AttributeError):
        return False


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` for arenas made from now on (0: leave glibc's default); True if
    the C library took it. Call once at start-up, before the server's threads allocate."""
    return count > 0 and _mallopt(M_ARENA_MAX, count)


def keep_heap(mb: int) -> bool:
    """Serve every block from glibc's heap (no `mmap`), grow it `mb` MB at a time and keep up to 2 × `mb` MB of
    it free for reuse (0: leave glibc's defaults); True if the C library took all four. Call once at start-up."""
    if mb <= 0:
        return False
    size = mb * 2 ** 20
    return all([_mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), _mallopt(M_MMAP_MAX, 0),
                _mallopt(M_TRIM_THRESHOLD, min(2 * size, 2 ** 31 - 1)), _mallopt(M_TOP_PAD, min(size, 2 ** 31 - 1))])


def tune_allocator(arenas: int, keep_mb: int) -> None:
    """Start-up, once per process (app, benches): `limit_arenas(arenas)` and `keep_heap(keep_mb)`."""
    limit_arenas(arenas)
    keep_heap(keep_mb)


def trim_memory(collect: bool = True) -> bool:
    """Collect garbage (if `collect`) and give free heap pages back; True if the allocator released some."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
