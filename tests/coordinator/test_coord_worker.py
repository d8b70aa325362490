"""The Ray task body's streaming of a training run (coordinator.worker), without Ray."""
from __future__ import annotations

import queue
import time
from types import SimpleNamespace

import pytest

from coordinator import worker
from coordinator.jobs import Progress


def _fast_job(config, problem, progress=None, should_stop=None):
    for step in (1, 2):
        progress(step, 2, {"loss": 1.0 / step})
    time.sleep(0.3)  # the end of a run (e.g. the last evaluation) after its last progress report
    return SimpleNamespace(steps=2)


class _SlowPollQueue(queue.Queue):
    """Every wait with a timeout lasts 30 s: a stream that learns of the end only by a timed-out poll hangs."""

    def get(self, block: bool = True, timeout: float | None = None):
        return super().get(block, None if timeout is None else 30.0)


def test_the_stream_ends_when_training_does_not_at_the_next_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # the old loop (poll until the training thread is dead) held every job one poll after training ended
    monkeypatch.setattr(worker.queue, "Queue", _SlowPollQueue)
    monkeypatch.setattr(worker, "run_job", _fast_job)
    config = SimpleNamespace(method="identity")
    start = time.monotonic()
    stream = worker._train_streaming(config, problem=None, progress_every=1)
    items = []
    try:
        while True:
            items.append(next(stream))
    except StopIteration as end:
        result = end.value
    assert time.monotonic() - start < 10.0
    assert [(p.step, p.total) for p in items if isinstance(p, Progress)] == [(1, 2), (2, 2)]
    assert result.steps == 2


def test_a_training_error_reaches_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config, problem, progress=None, should_stop=None):
        raise RuntimeError("weights went NaN")

    monkeypatch.setattr(worker.queue, "Queue", _SlowPollQueue)
    monkeypatch.setattr(worker, "run_job", broken)
    with pytest.raises(RuntimeError, match="NaN"):
        list(worker._train_streaming(SimpleNamespace(method="identity"), problem=None, progress_every=1))


def test_progress_is_reported_a_few_times_a_second_not_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def quick_steps(config, problem, progress=None, should_stop=None):
        for step in range(1, 101):  # 100 steps in far less than PROGRESS_MIN_INTERVAL_S
            progress(step, 100, {"loss": 1.0})
        return SimpleNamespace(steps=100)

    monkeypatch.setattr(worker, "run_job", quick_steps)
    items = list(worker._train_streaming(SimpleNamespace(method="identity"), problem=None, progress_every=1))
    # the first report (the job has started) and the last (it has ended), nothing between
    assert [p.step for p in items] == [1, 100]
