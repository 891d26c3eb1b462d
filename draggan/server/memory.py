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
trimming +30 MB, flat over the last 60 visits.
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


M_ARENA_MAX = -8      # glibc's mallopt parameter number


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` for arenas made from now on (0: leave glibc's default); True if
    the C library took it. Call once at start-up, before the server's threads allocate."""
    if count <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, int(count)))
    except (OSError, AttributeError):
        return False


def trim_memory(collect: bool = True) -> bool:
    """Collect garbage (if `collect`) and give free heap pages back; True if the allocator released some."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
