"""Micro-batching per route: concurrent requests to one (category, task) run as one forward pass.

A lane per route holds the pending requests; its thread takes the first one, waits at most
`max_wait_s` for more, and runs up to `max_batch` images together (a request is never split, so one
larger than `max_batch` runs alone). It waits only for requests known to be coming: a request
`announce`s itself before it decodes its images, so a lone request runs at once and a busy route
fills its batches. Every item carries the net version its request saw; a batch that
straddles a hot swap is run per version, so a request always finishes on the version it started with.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]  # (route, items) -> one result per item


class BatcherClosed(RuntimeError):
    """The batcher was closed: the request was not (or will not be) run."""


@dataclass
class _Pending:
    items: list[Any]
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class _Lane:
    def __init__(self, key: Hashable, batcher: Batcher) -> None:
        self.key, self.batcher = key, batcher
        self.pending: deque[_Pending] = deque()
        self.coming = 0  # requests announced (decoding their images) and not yet submitted
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name=f"batch-{key}", daemon=True)
        self.thread.start()

    def put(self, request: _Pending, announced: bool) -> None:
        with self.ready:
            self.pending.append(request)
            self.coming -= announced
            self.ready.notify()

    def withdraw(self) -> None:
        """An announced request that will not come (its images did not decode)."""
        with self.ready:
            self.coming -= 1
            self.ready.notify()

    def _take(self) -> list[_Pending] | None:
        """The next batch: the oldest request plus what arrives within max_wait, up to max_batch images."""
        b = self.batcher
        with self.ready:
            while not self.pending and not b.closed:
                self.ready.wait()
            if b.closed:
                return None
            deadline = self.pending[0].arrived + b.max_wait_s
            while (self.coming > 0 and sum(len(p.items) for p in self.pending) < b.max_batch
                   and (left := deadline - time.monotonic()) > 0):
                self.ready.wait(left)
            batch: list[_Pending] = []
            images = 0
            while self.pending and (not batch or images + len(self.pending[0].items) <= b.max_batch):
                images += len(self.pending[0].items)
                batch.append(self.pending.popleft())
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            items = [item for request in batch for item in request.items]
            try:
                results = list(self.batcher.run(self.key, items))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request threads
                for request in batch:
                    request.future.set_exception(exc)
                continue
            if self.batcher.on_batch is not None:
                self.batcher.on_batch(self.key, len(items))
            start = 0
            for request in batch:
                request.future.set_result(results[start:start + len(request.items)])
                start += len(request.items)


class Batcher:
    def __init__(self, run: RunBatch, max_batch: int = 32, max_wait_s: float = 0.005,
                 on_batch: Callable[[Hashable, int], None] | None = None) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.run, self.max_batch, self.max_wait_s, self.on_batch = run, max_batch, max_wait_s, on_batch
        self.closed = False
        self._lanes: dict[Hashable, _Lane] = {}
        self._lock = threading.Lock()

    def _lane(self, key: Hashable) -> _Lane:
        if self.closed:
            raise BatcherClosed("the batcher is closed")
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(key, self)
            return lane

    def submit(self, key: Hashable, items: list[Any]) -> Future:
        """A future of the request's results, in item order."""
        request = _Pending(items)
        self._lane(key).put(request, announced=False)
        return request.future

    @contextlib.contextmanager
    def announce(self, key: Hashable) -> Iterator[Callable[[list[Any]], Future]]:
        """`with batcher.announce(route) as submit: ... submit(items)`: while the block prepares its
        items, the lane's current batch may wait for them (up to max_wait)."""
        lane = self._lane(key)
        with lane.ready:
            lane.coming += 1
        submitted = False

        def submit(items: list[Any]) -> Future:
            nonlocal submitted
            request = _Pending(items)
            lane.put(request, announced=not submitted)
            submitted = True
            return request.future

        try:
            yield submit
        finally:
            if not submitted:
                lane.withdraw()

    def close(self) -> None:
        """Stops every lane; requests still queued fail (the server has stopped taking calls by then)."""
        self.closed = True
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            with lane.ready:
                lane.ready.notify_all()
                left = list(lane.pending)
                lane.pending.clear()
            for request in left:
                request.future.set_exception(BatcherClosed("the server is shutting down"))
        for lane in lanes:
            lane.thread.join(timeout=5)
