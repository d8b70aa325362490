"""A pipeline stage: a thread that applies one step to every chunk of a stream, as it arrives.

The registry's upload path (coordinator.ingest) runs the hash, the tensor check and the store write as
stages, and the registry client hashes a download as a stage, so receiving the next chunk overlaps
with the work on the last one (hashlib and numpy release the GIL). The queue holds one chunk: a slow
stage holds the stream back rather than letting chunks pile up, so memory stays bounded.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_END = None  # what tells a stage the stream is over


class Stage:
    """Applies `step` to every chunk it is handed; the first error is kept (and raised by `raise_error`)."""

    def __init__(self, name: str, step: Callable[[Any], object]) -> None:
        """`step` takes what `put` is given: bytes, or a memoryview of a buffer that is not written again."""
        self.step = step
        self.error: BaseException | None = None
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name=f"stage-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not _END:
            if self.error is None:  # after a failure, keep draining so the stream never blocks
                try:
                    self.step(chunk)
                except BaseException as exc:  # noqa: BLE001 - handed to the stream's own thread
                    self.error = exc

    def put(self, chunk: bytes | memoryview) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        """Waits until every chunk handed over has been processed (or dropped after an error)."""
        self._queue.put(_END)
        self._thread.join()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error




def read_ahead(pieces: Iterator[bytes], name: str = "read-ahead") -> Iterator[bytes]:
    """The pieces of `pieces`, the next one read on a thread while the caller works on this one (e.g. an
    object-store read overlapping a gRPC send); errors of `pieces` are raised in the caller, in order."""
    handover: queue.Queue[tuple[bytes | None, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: tuple[bytes | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for piece in pieces:
                if not offer((piece, None)):
                    return
            offer((None, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            offer((None, exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # e.g. releases the object store's connection at once

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            piece, error = handover.get()
            if error is not None:
                raise error
            if piece is None:
                return
            yield piece
    finally:
        stop.set()  # the caller stopped early (client gone): the reader ends at its next piece


__all__ = ["Stage", "read_ahead"]
