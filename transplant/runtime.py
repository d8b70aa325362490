"""Process-wide settings for CPU work on small machines."""
from __future__ import annotations

import os

import torch


def configure_threads(default: int = 1) -> int:
    """Small convs gain nothing from more threads and lose a lot to contention between processes
    (measured here: 18 ms vs 135 ms a step with 2 threads on a loaded 2-core machine)."""
    threads = int(os.environ.get("TRANSPLANT_THREADS", default))
    torch.set_num_threads(max(1, threads))
    return threads
