"""The per-route micro-batcher: batch bounds, waiting, request order, errors, shutdown."""
from __future__ import annotations

import threading
import time

import pytest

from coordinator.serving.batcher import Batcher, BatcherClosed


class Recorder:
    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[tuple[object, list]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, key, items):
        with self.lock:
            self.batches.append((key, list(items)))
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [(key, item) for item in items]


def test_announced_requests_share_a_batch_up_to_max_batch_and_get_their_own_results():
    run = Recorder()
    batcher = Batcher(run, max_batch=4, max_wait_s=5)
    with batcher.announce("r") as s0, batcher.announce("r") as s1, batcher.announce("r") as s2:
        futures = [s0([0, 100])]
        time.sleep(0.2)  # still decoding: the batch waits for the announced ones
        futures += [s1([1, 101]), s2([2, 102])]  # 6 items: 4 + 2, never a request split
    assert [f.result(timeout=5) for f in futures] == [[("r", i), ("r", i + 100)] for i in range(3)]
    assert [len(items) for _, items in run.batches] == [4, 2]
    batcher.close()


def test_nothing_announced_runs_at_once_and_a_withdrawn_announcement_stops_the_wait():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=10)
    started = time.monotonic()
    assert batcher.submit("r", [1]).result(timeout=5) == [("r", 1)]
    with pytest.raises(ValueError, match="undecodable"):
        with batcher.announce("r"):
            future = batcher.submit("r", [2])  # waits for the announced request ...
            time.sleep(0.1)
            raise ValueError("undecodable")  # ... which never comes
    assert future.result(timeout=5) == [("r", 2)]
    assert time.monotonic() - started < 3  # neither waited max_wait (10 s)
    assert batcher.submit("r", [1, 2, 3] * 4).result(timeout=5) == [("r", i) for i in [1, 2, 3] * 4]  # > max_batch
    batcher.close()


def test_an_announcement_is_waited_for_at_most_max_wait():
    batcher = Batcher(Recorder(), max_batch=8, max_wait_s=0.1)
    with batcher.announce("r"):
        started = time.monotonic()
        assert batcher.submit("r", [1]).result(timeout=5) == [("r", 1)]
        assert 0.05 < time.monotonic() - started < 2
    batcher.close()


def test_routes_are_batched_apart():
    run = Recorder()
    batcher = Batcher(run, max_batch=8, max_wait_s=0.1)
    a, b = batcher.submit("a", [1]), batcher.submit("b", [2])
    assert (a.result(timeout=5), b.result(timeout=5)) == ([("a", 1)], [("b", 2)])
    assert sorted(key for key, _ in run.batches) == ["a", "b"]
    batcher.close()


def test_an_error_reaches_every_request_of_its_batch_and_the_lane_keeps_serving():
    run = Recorder(fail_on=13)
    batcher = Batcher(run, max_batch=8, max_wait_s=0.1)
    good, bad = batcher.submit("r", [1]), batcher.submit("r", [13])
    for future in (good, bad):
        with pytest.raises(ValueError, match="bad item 13"):
            future.result(timeout=5)
    assert batcher.submit("r", [2]).result(timeout=5) == [("r", 2)]
    batcher.close()


def test_closed_batcher_refuses_new_requests():
    batcher = Batcher(Recorder(), max_batch=2, max_wait_s=0.01)
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit("r", [1])
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch=0)
