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


def _evaluating(ledger: L.Ledger) -> str:
    job = ledger.create_job({})
    assert ledger.transition(job.id, L.RUNNING) and ledger.transition(job.id, L.EVALUATING)
    return job.id


def test_a_claimed_commit_cannot_be_cancelled_and_a_cancelled_job_cannot_claim(tmp_path) -> None:
    ledger = L.Ledger(tmp_path / "l.db")
    claimed, cancelled = _evaluating(ledger), _evaluating(ledger)
    assert ledger.claim_commit(claimed, {"proposal": {"net": "n"}}, candidates=[{"method": "m"}])
    assert not ledger.transition(claimed, L.CANCELLED)  # the cancel lost: the commit goes on
    assert not ledger.transition(claimed, L.PENDING)  # nor is it ever re-queued
    assert not ledger.claim_commit(claimed, {"proposal": {}})  # one claim
    assert [j.id for j in ledger.claimed_jobs()] == [claimed]
    assert ledger.transition(cancelled, L.CANCELLED)
    assert not ledger.claim_commit(cancelled, {"proposal": {}})  # the cancel came first: nothing commits
    assert ledger.recover(max_attempts=3) == [] and ledger.get_job(claimed).state == L.EVALUATING
    assert ledger.transition(claimed, L.REJECTED, reason="gate")
    row = ledger.get_job(claimed)
    assert (row.state, row.reason, row.candidates, row.commit_claim) == (L.REJECTED, "gate", [{"method": "m"}],
                                                                         {"proposal": {"net": "n"}})
    assert ledger.record_promotion(claimed, 4, "forced by ops")
    assert (ledger.get_job(claimed).net_version, ledger.get_job(claimed).state) == (4, L.REJECTED)
    assert not ledger.record_promotion(cancelled, 5, "x")


def test_states_are_defined_once() -> None:
    from coordinator import job_states
    from protos.nt.v1 import control_pb2

    assert L.STATES is job_states.STATES and L.TERMINAL is job_states.TERMINAL
    assert set(L.STATES) == set(control_pb2.JobState.keys()) - {"JOB_STATE_UNSPECIFIED"}
    assert L.REJECTED in L.TERMINAL and control_pb2.REJECTED in job_states.TERMINAL_PB


def test_an_older_ledger_is_upgraded_in_place(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL, error TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL, started REAL NOT NULL DEFAULT 0, finished REAL NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0, metrics TEXT NOT NULL DEFAULT '{}',
            adapter_module_id TEXT NOT NULL DEFAULT '', net_version INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE progress (job_id TEXT NOT NULL, step INTEGER NOT NULL, total INTEGER NOT NULL, loss REAL NOT NULL,
            distill_loss REAL NOT NULL, task_loss REAL NOT NULL, time REAL NOT NULL, PRIMARY KEY (job_id, step));
        INSERT INTO jobs (id, spec, state, created) VALUES ('job-old', '{}', 'SUCCEEDED', 1.0);
        INSERT INTO progress VALUES ('job-old', 10, 20, 0.5, 0.4, 0.1, 2.0);""")
    db.commit()
    db.close()
    ledger = L.Ledger(path)
    row = ledger.get_job("job-old")
    assert (row.state, row.candidates, row.reason, row.commit_claim) == (L.SUCCEEDED, [], "", {})
    assert ledger.job_progress("job-old") == [(10, 20, 0.5, 0.4, 0.1, 2.0, "")]
    ledger.record_progress("job-old", 10, 20, 0.3, 0.2, 0.1, 3.0, method="lstsq")  # per candidate now
    assert len(ledger.job_progress("job-old")) == 2
