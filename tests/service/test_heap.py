"""A pinned mmap threshold gives freed large blocks back to the operating system at once, and a
limit on arenas keeps threads that allocate at the same time in one."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Free one 4 MiB block (glibc then serves blocks up to 4 MiB from its heap), allocate 96 x 1 MiB,
# free all but the last: the MiB still held after that is what the heap kept.
SCRIPT = """
import ctypes, sys
from tiergate.service.heap import pin_mmap_threshold
if sys.argv[1] == "pinned":
    assert pin_mmap_threshold()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free(ctypes.c_void_p(libc.malloc(4 << 20)))
before = rss()
blocks = [libc.malloc(1 << 20) for _ in range(96)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
for b in blocks[:-1]:
    libc.free(ctypes.c_void_p(b))
print((rss() - before) >> 20)
"""


def _kept_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return int(out.stdout.strip())


def test_pinned_threshold_returns_freed_blocks_and_the_default_does_not() -> None:
    assert _kept_mib("default") > 64  # the behaviour the gateway works around
    assert _kept_mib("pinned") < 8


# Eight threads allocate at the same moment (a barrier), then glibc's malloc_stats lists its arenas.
ARENAS = """
import ctypes, sys, threading
from tiergate.service.heap import limit_arenas
if sys.argv[1] == "limited":
    assert limit_arenas(1)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    blocks = [libc.malloc(64) for _ in range(20000)]
    for b in blocks:
        libc.free(ctypes.c_void_p(b))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc.malloc_stats()
"""


def _arenas(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return out.stderr.count("Arena ")


def test_limited_arenas_keep_concurrent_threads_in_one_and_the_default_does_not() -> None:
    assert _arenas("default") > 1
    assert _arenas("limited") == 1
