"""Keeps glibc's malloc from giving chunk-sized buffers back to the kernel after every message.

Module bytes move in 1 MiB messages: gRPC's receive buffers, the protobuf's bytes, the store's pieces.
With glibc's defaults a freed buffer of that size is soon returned to the kernel (munmap, or a heap
trim), and the next one is faulted in and zeroed page by page. On the 2-core VM this project is measured
on, that costs about 1 CPU-second per GB for each copy (2 GB copied through fresh 1 MiB buffers: 2.1 s;
through reused ones: 0.1 s), and a perf profile of the coordinator during an upload had 52 % of its
samples in the kernel's `clear_page`. Fixed thresholds keep such buffers in the heap for reuse:
allocations below `MMAP_THRESHOLD` come from the heap, and freed memory is handed back only once more
than `TRIM_THRESHOLD` of it sits at the top (a bounded constant, not growth per upload).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger("common.allocator")

MMAP_THRESHOLD = 32 << 20   # glibc's own ceiling for its adaptive threshold: chunks stay below it
TRIM_THRESHOLD = 64 << 20   # freed memory kept for reuse before it goes back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_buffers(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Sets both thresholds for this process; True if they were set. A no-op (False) off glibc, or where
    the operator tuned malloc through its own environment variables (theirs win). Cheap to call again
    (a worker calls it per job): the settings are applied once per process."""
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in _USER_SETTINGS):
        return False
    return _set_thresholds(mmap_threshold, trim_threshold)


@functools.cache
def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's mallopt among them (no library search)
        done = (libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1)
    except (OSError, AttributeError):
        return False
    if not done:
        log.warning("mallopt refused the buffer thresholds; module transfers will fault in fresh pages")
    return done


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_buffers"]
