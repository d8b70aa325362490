"""Resource isolation for streaming RPCs: one site's stalled or slow streams cannot starve the server.

A sync gRPC server gives each RPC a thread from a fixed pool. An upload that sends its header and
then stalls would hold its thread for as long as the client likes, and twenty of them from one site
would leave nothing for the admin's calls or the other sites' heartbeats. So:
- each site holds at most `per_site` streams at once (beyond that: RESOURCE_EXHAUSTED at once);
- a stream's messages are read on a helper thread and handed over through a small queue, so the
  RPC thread waits at most `idle_s` for the next message and `deadline_s` for the whole stream.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
_END = object()
_HANDOVER = 4       # messages buffered between the reader thread and the RPC: bounded memory
_POLL_S = 0.5       # how often a blocked reader checks whether the RPC gave up


class StreamTimeout(Exception):
    """The client sent nothing for too long, or the whole stream took too long."""


class TooManyStreams(Exception):
    """A site already holds its share of concurrent streams."""


@dataclass(frozen=True)
class StreamLimits:
    per_site: int = 4            # concurrent upload streams of one site
    idle_s: float = 30.0         # longest wait for the next message of a stream
    deadline_s: float = 1800.0   # longest whole stream (2 GiB at ~1.2 MB/s)


class StreamSlots:
    """Counts each site's open streams; `hold(site)` refuses one past the limit."""

    def __init__(self, per_site: int) -> None:
        self.per_site = per_site
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, site: str) -> Iterator[None]:
        with self._lock:
            if self._open.get(site, 0) >= self.per_site:
                raise TooManyStreams(f"site '{site}' already has {self.per_site} streams open; retry when one ends")
            self._open[site] = self._open.get(site, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[site] -= 1
                if not self._open[site]:
                    del self._open[site]


def watched(messages: Iterator[T], idle_s: float, deadline_s: float) -> Iterator[T]:
    """The messages of `messages`, raising StreamTimeout when the next one takes longer than `idle_s`
    or the stream as a whole longer than `deadline_s`. Errors of the underlying iterator propagate."""
    handover: queue.Queue = queue.Queue(maxsize=_HANDOVER)
    stopped = threading.Event()
    threading.Thread(target=_read, args=(messages, handover, stopped), daemon=True,
                     name="stream-reader").start()
    end = time.monotonic() + deadline_s
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise StreamTimeout(f"the stream took longer than its {deadline_s:.0f} s deadline")
            try:
                item = handover.get(timeout=min(idle_s, left))
            except queue.Empty:
                if time.monotonic() >= end:
                    raise StreamTimeout(f"the stream took longer than its {deadline_s:.0f} s deadline") from None
                raise StreamTimeout(f"no message for {idle_s:.0f} s: the stream stalled") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()


def _read(messages: Iterator, handover: queue.Queue, stopped: threading.Event) -> None:
    try:
        for message in messages:
            if not _put(handover, message, stopped):
                return
        _put(handover, _END, stopped)
    except Exception as exc:  # e.g. the client cancelled: the RPC side raises it
        _put(handover, exc, stopped)


def _put(handover: queue.Queue, item: object, stopped: threading.Event) -> bool:
    while not stopped.is_set():
        try:
            handover.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
