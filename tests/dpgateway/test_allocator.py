"""The allocator tuning: with it, buffers freed by one release are reused by the next without page faults
(a worker thread, like OpenDP's, allocating and freeing ~1 MiB buffers); without it, glibc faults them in
afresh every round (the control: the measurement can fail). Each case runs in a fresh interpreter so that
no earlier tuning of this process interferes."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from privmesh.dpgateway.allocator import retain_freed_memory

ROUNDS = """
import ctypes, ctypes.util, resource, sys, threading
from privmesh.dpgateway.allocator import retain_freed_memory
applied = retain_freed_memory(int(sys.argv[1]))
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
def rounds():
    sizes = [(1 << 20) + i * 4096 for i in range(8)]
    for n in range(25):
        if n == 5:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffers = [libc.malloc(s) for s in sizes]
        for b, s in zip(buffers, sizes):
            ctypes.memset(b, 1, s)
        for b in buffers:
            libc.free(b)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
worker = threading.Thread(target=rounds)
worker.start()
worker.join()
print(applied, faults[0])
"""


def _faults(megabytes: int) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, str(megabytes)], check=True, capture_output=True, text=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_zero_leaves_the_defaults() -> None:
    assert retain_freed_memory(0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    applied, tuned = _faults(64)
    control_applied, control = _faults(0)
    assert applied and not control_applied
    assert tuned < 100  # 20 rounds of 8 MiB touched: 40,000 page faults if nothing were reused
    assert control > 10 * max(tuned, 100)
