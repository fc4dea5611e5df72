"""Keeps freed memory in the process between releases. OpenDP's bundled Polars allocates with the C library's
malloc, and glibc's defaults map every buffer over 128 KiB afresh and hand freed heap tops back to the OS, so
each release faults its column buffers in again (about a third of a release's CPU time at 10M rows). Raising
both thresholds lets the next release reuse those pages. Written by hand: two mallopt calls, no library."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more on 64-bit (half of its heap size)


def retain_freed_memory(megabytes: int) -> bool:
    """Lets the process keep up to `megabytes` freed at the top of each malloc arena, and serves buffers up to
    32 MiB from the arenas. True when applied; False with 0 or a C library without mallopt (nothing changes)."""
    if megabytes <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    size = megabytes << 20
    return bool(mallopt(M_MMAP_THRESHOLD, min(size, MMAP_THRESHOLD_MAX)) and mallopt(M_TRIM_THRESHOLD, size))
