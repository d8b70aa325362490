"""In-memory fan-out of job events to WatchJob streams (progress is not durable; states are)."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from collections.abc import Callable, Iterator

from protos.nt.v1 import control_pb2

MAX_BACKLOG = 1000  # a slow watcher loses progress events, never its memory bound


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[queue.Queue]] = defaultdict(set)
        self._listeners: list[Callable[[control_pb2.JobEvent], None]] = []

    def add_listener(self, listener: Callable[[control_pb2.JobEvent], None]) -> None:
        """Called synchronously with every event of every job (metrics); must be quick and not raise."""
        self._listeners.append(listener)

    def publish(self, event: control_pb2.JobEvent) -> None:
        if not event.time:
            event.time = time.time()
        for listener in self._listeners:
            listener(event)
        with self._lock:
            targets = list(self._subscribers.get(event.job_id, ()))
        for target in targets:
            try:
                target.put_nowait(event)
            except queue.Full:
                pass  # progress is advisory; the final state is re-read from the ledger anyway

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[queue.Queue]:
        inbox: queue.Queue = queue.Queue(MAX_BACKLOG)
        with self._lock:
            self._subscribers[job_id].add(inbox)
        try:
            yield inbox
        finally:
            with self._lock:
                self._subscribers[job_id].discard(inbox)
                if not self._subscribers[job_id]:
                    del self._subscribers[job_id]
