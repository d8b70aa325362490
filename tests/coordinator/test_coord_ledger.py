"""Job ledger: guarded state machine, durability, restart recovery, sites."""

from __future__ import annotations

from coordinator import ledger as L


def test_happy_path_and_terminal_is_final(tmp_path) -> None:
    ledger = L.Ledger(tmp_path / "l.db")
    job = ledger.create_job({"category": "3"})
    assert ledger.transition(job.id, L.RUNNING)
    assert ledger.transition(job.id, L.EVALUATING, adapter_module_id="a1")
    assert ledger.transition(job.id, L.SUCCEEDED, metrics={"error_rate": 5.0}, net_version=2)
    for state in (L.FAILED, L.CANCELLED, L.RUNNING, L.PENDING, L.SUCCEEDED):
        assert not ledger.transition(job.id, state, error="late")
    row = ledger.get_job(job.id)
    assert (row.state, row.attempts, row.metrics, row.net_version, row.error) == (L.SUCCEEDED, 1, {"error_rate": 5.0}, 2, "")
    assert row.finished >= row.started >= row.created > 0


def test_guarded_transitions(tmp_path) -> None:
    ledger = L.Ledger(tmp_path / "l.db")
    job = ledger.create_job({})
    assert not ledger.transition(job.id, L.EVALUATING)  # must run first
    assert not ledger.transition(job.id, L.SUCCEEDED)
    assert ledger.transition(job.id, L.CANCELLED)
    assert not ledger.transition(job.id, L.RUNNING)
    assert ledger.get_job(job.id).state == L.CANCELLED


def test_restart_recovery(tmp_path) -> None:
    path = tmp_path / "l.db"
    ledger = L.Ledger(path)
    pending, running, evaluating, worn, done = (ledger.create_job({"n": i}) for i in range(5))
    ledger.transition(running.id, L.RUNNING)
    ledger.transition(evaluating.id, L.RUNNING)
    ledger.transition(evaluating.id, L.EVALUATING)
    for _ in range(3):
        ledger.transition(worn.id, L.RUNNING)
        ledger.transition(worn.id, L.PENDING)
    ledger.transition(worn.id, L.RUNNING)
    ledger.transition(done.id, L.FAILED, error="x")
    ledger.close()

    reopened = L.Ledger(path)  # a new coordinator process
    queued = reopened.recover(max_attempts=3)
    assert queued == [pending.id, running.id, evaluating.id]
    assert reopened.get_job(worn.id).state == L.FAILED
    assert "restarted too often" in reopened.get_job(worn.id).error
    assert reopened.get_job(done.id).error == "x"
    assert [j.id for j in reopened.list_jobs(limit=2)] == [done.id, worn.id]


def test_sites(tmp_path) -> None:
    ledger = L.Ledger(tmp_path / "l.db")
    assert ledger.get_site("a") is None
    ledger.record_site("a", "127.0.0.1:1")
    ledger.record_site("a", "127.0.0.1:2")
    assert ledger.get_site("a").endpoint == "127.0.0.1:2"
