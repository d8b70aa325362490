"""common.stages: the pipeline stage and the read-ahead both sides of the wire use."""
from __future__ import annotations

import hashlib
import threading
import time

import pytest

from common.stages import Stage, read_ahead


def test_a_stage_sees_every_chunk_in_order_and_keeps_the_first_error() -> None:
    digest, seen = hashlib.sha256(), []
    stage = Stage("t", lambda chunk: (digest.update(chunk), seen.append(chunk)))
    for i in range(50):
        stage.put(bytes([i]) * 1000)
    stage.close()
    assert seen == [bytes([i]) * 1000 for i in range(50)]
    assert digest.hexdigest() == hashlib.sha256(b"".join(seen)).hexdigest()

    def step(chunk: bytes) -> None:
        if chunk == b"bad":
            raise ValueError("bad chunk")
    failing = Stage("f", step)
    for chunk in (b"ok", b"bad", b"ok", b"ok", b"ok"):  # never blocks after the failure: it drains
        failing.put(chunk)
    failing.close()
    with pytest.raises(ValueError, match="bad chunk"):
        failing.raise_error()


def test_read_ahead_overlaps_reading_with_the_callers_work() -> None:
    def slow_source():
        for i in range(6):
            time.sleep(0.05)  # an object-store read
            yield bytes([i])

    start = time.perf_counter()
    out = []
    for piece in read_ahead(slow_source()):
        time.sleep(0.05)  # a gRPC send
        out.append(piece)
    assert out == [bytes([i]) for i in range(6)]
    assert time.perf_counter() - start < 0.5  # in turn it would take 0.6 s


def test_read_ahead_raises_the_sources_error_and_closes_it_when_the_caller_stops() -> None:
    def failing():
        yield b"a"
        raise OSError("store gone")
    with pytest.raises(OSError, match="store gone"):
        list(read_ahead(failing()))

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield b"x"
        finally:
            closed.set()
    reader = read_ahead(endless())
    assert next(reader) == b"x"
    reader.close()  # the client went away
    assert closed.wait(2)
