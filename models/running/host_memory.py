"""Keep freed tensor memory inside the process on glibc, so a call does not fault its pages in again.

glibc's malloc serves each block over its mmap threshold (128 KiB at start, raised by its own
heuristic up to 32 MiB) with a fresh mmap and hands it back to the kernel when freed; every call
of a network then touches new pages, and on the CPU each of those pages is a page fault. A 128 px
sketch call on the mini models took about 1,500 faults and about a seventh of its time that way
(bench/RESULTS.md). Raising the mmap and trim thresholds keeps the blocks in malloc's heap, where
the next call reuses them: the process keeps its peak working set instead of returning it between
calls, which a server with resident models does anyway.

The thresholds belong to the process, not to one studio. Elsewhere than glibc (macOS, Windows,
musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import sys
from functools import cache

MIB = 1024 * 1024
# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size stay in the heap, and this much free memory at its top is kept. Large
# enough for SD-Turbo's largest activations at 512 px on the CPU (a 1x128x512x512 fp32 tensor is
# 128 MiB); larger blocks are mmapped as before.
RETAINED_BYTES = 256 * MIB
# `0` leaves glibc's thresholds as they are in training (to measure what retaining gives)
TRAINING_VARIABLE = "ONESTEP_TRAINING_RETAIN_MEMORY"


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with mallopt's thresholds), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to RETAINED_BYTES in the process for reuse: glibc's mmap and trim
    thresholds, for the whole process. Returns whether it was applied (False elsewhere than glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(RETAINED_BYTES)) == 1
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(RETAINED_BYTES)) == 1
    return mmap_set and trim_set


def retain_for_training() -> bool:
    """retain_freed_memory() for a training process, unless $ONESTEP_TRAINING_RETAIN_MEMORY is 0."""
    if os.environ.get(TRAINING_VARIABLE, "1") == "0":
        return False
    return retain_freed_memory()
