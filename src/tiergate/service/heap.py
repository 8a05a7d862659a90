"""Keep glibc's heap from holding on to freed memory.

Under steady load the gateway's RSS crept up without a leak: the cache embeds each batch of
lookups on worker threads, and torch's intermediate tensors (a different shape for every batch)
are freed into glibc's per-thread arenas. glibc raises its mmap threshold every time a large
block is freed (up to 32 MiB), so these blocks stop being mapped and unmapped and pile up in
the arenas instead. Setting the threshold once turns the adjustment off: blocks of 128 KiB
and more are mapped on allocation and unmapped on free. Embedding 12,000 queries on three
threads: RSS +20 MB per 4,000 queries and still rising by default, flat (+3 MB) with it fixed.

glibc also gives each thread that allocates concurrently an arena of its own (up to 8 per core).
The gateway's cache inserts run on eight threads. Each arena keeps the fragments its thread freed,
and the arenas together grew RSS about 170 B per insert. With one arena that was 29 B (20,000
inserts against a fixed quota, eight threads). Small objects mostly come from Python's own
allocator under the GIL, so one arena costs little lock contention. In the load benchmark
(benchmarks/load.py, 2 cores) the gateway served 271 requests/s with it against 178 without.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers, from glibc's malloc.h
M_ARENA_MAX = -8
DEFAULT_THRESHOLD = 128 * 1024  # glibc's own starting value


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (process-wide; call before the models load). An operator's
    MALLOC_MMAP_THRESHOLD_ wins. False where the C library is not glibc."""
    return _mallopt("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, nbytes)


def limit_arenas(n: int = 1) -> bool:
    """At most `n` malloc arenas (process-wide; call before threads start). An operator's
    MALLOC_ARENA_MAX wins. False where the C library is not glibc."""
    return _mallopt("MALLOC_ARENA_MAX", M_ARENA_MAX, n)


def _mallopt(env: str, param: int, value: int) -> bool:
    if env in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        mallopt = None
    if mallopt is None or mallopt(param, value) != 1:
        log.info("heap: %s left to the C library", env)
        return False
    return True
