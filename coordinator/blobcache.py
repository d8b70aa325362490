"""A worker's content-addressed cache of module blobs: a module it already has is not fetched again.

Blobs are named by their sha256, so a cached copy can never be stale; the cache is bounded in bytes
and forgets the least recently used blob first. One per Ray worker process (module level in
`coordinator.worker`): jobs of the same generic site read the same task modules over and over.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_BYTES = 1 << 30


class BlobCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, sha256: str, load: Callable[[str], bytes]) -> bytes:
        """The blob `sha256`, from the cache or from `load` (then kept if it fits)."""
        with self._lock:
            if sha256 in self._blobs:
                self._blobs.move_to_end(sha256)
                self.hits += 1
                return self._blobs[sha256]
            self.misses += 1
        data = load(sha256)  # outside the lock: one slow read must not stall the other candidates
        with self._lock:
            if sha256 not in self._blobs and len(data) <= self.max_bytes:
                self._blobs[sha256] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes:
                    _, old = self._blobs.popitem(last=False)
                    self._bytes -= len(old)
        return data

    def __len__(self) -> int:
        return len(self._blobs)
