"""The evaluation of a job's candidates at the owning site: several at once, each as soon as it is trained,
cancellable, and abandoned with its attempt."""
from __future__ import annotations

import threading
import time

import pytest

from coordinator.committer import EVALUATIONS_IN_FLIGHT, Evaluation
from coordinator.jobs import CandidateResult, JobPlan, TrainedAdapter
from coordinator.ledger import CANCELLED, EVALUATING, RUNNING, Ledger
from coordinator.manifests import ModuleRecord
from coordinator.site_client import EvaluationError
from tests.helpers.cluster import TASK
from transplant.job import JobConfig

METHODS = ("back_distill", "direct_learn", "hybrid", "identity", "lstsq", "probe_stitch", "weight_match")


def _record(site: str, role: str, category: str, task: str = "") -> ModuleRecord:
    return ModuleRecord(f"{site}-{role}-{category}", site, category, role, task, "{}", "0" * 64, 1,
                        feature_norm_mean=1.0)


def _evaluating(ledger: Ledger, state: str = EVALUATING) -> tuple[JobPlan, list[CandidateResult]]:
    job = ledger.create_job({"category": "5"})
    assert ledger.transition(job.id, RUNNING) and (state == RUNNING or ledger.transition(job.id, state))
    plan = JobPlan(job.id, "", JobConfig.create(TASK), "site-t", _record("site-t", "category", "5"),
                   _record("site-t", "task", "5", TASK), _record("site-g", "task", "3", TASK),
                   _record("site-g", "category", "3"))
    candidates = [CandidateResult(m, TrainedAdapter(m, f"adapter-{m}", "1" * 64, 1, "{}", 5, 0.1)) for m in METHODS]
    return plan, candidates


class SlowSite:
    """Stands in for the site's Evaluate: takes a while and records how many calls overlap."""

    def __init__(self, on_call=None) -> None:
        self.lock, self.running, self.most, self.calls = threading.Lock(), 0, 0, []
        self.on_call = on_call

    def evaluate(self, plan: JobPlan, ref, config_json: str) -> dict[str, float]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.calls.append(plan.config.train.method)
        try:
            if self.on_call is not None:
                self.on_call(plan)
            time.sleep(0.2)
            return {"error_rate": 10.0, "teacher_error_rate": 5.0}
        finally:
            with self.lock:
                self.running -= 1


def _finish(ledger: Ledger, site, plan: JobPlan, candidates: list[CandidateResult]) -> bool:
    return Evaluation(ledger, site, plan).finish(candidates)


def test_candidates_are_evaluated_several_at_once(tmp_path) -> None:
    ledger, site = Ledger(tmp_path / "ledger.db"), SlowSite()
    plan, candidates = _evaluating(ledger)
    start = time.perf_counter()
    assert _finish(ledger, site, plan, candidates)
    assert site.most == EVALUATIONS_IN_FLIGHT > 1  # one after another before: 7 x 0.2 s
    assert time.perf_counter() - start < 0.2 * len(METHODS) * 0.8
    assert sorted(site.calls) == sorted(METHODS)
    assert all(c.metrics == {"error_rate": 10.0, "teacher_error_rate": 5.0} for c in candidates)


def test_a_cancel_during_evaluation_stops_sending_candidates(tmp_path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    plan, candidates = _evaluating(ledger)
    site = SlowSite(on_call=lambda p: ledger.transition(p.job_id, CANCELLED))
    assert not _finish(ledger, site, plan, candidates)
    assert len(site.calls) <= EVALUATIONS_IN_FLIGHT  # those already at the site, no more


def test_an_evaluation_error_is_raised_after_the_others_ended(tmp_path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    plan, candidates = _evaluating(ledger)

    def refuse_hybrid(p: JobPlan) -> None:
        if p.config.train.method == "hybrid":
            raise EvaluationError("site site-t refused: hybrid")

    site = SlowSite(on_call=refuse_hybrid)
    with pytest.raises(EvaluationError, match="hybrid"):
        _finish(ledger, site, plan, candidates)
    assert site.running == 0  # no call left running behind the error


def test_a_candidate_sent_while_training_is_scored_once(tmp_path) -> None:
    ledger, site = Ledger(tmp_path / "ledger.db"), SlowSite()
    plan, candidates = _evaluating(ledger, state=RUNNING)
    evaluation = Evaluation(ledger, site, plan)
    early = CandidateResult(candidates[-1].method, candidates[-1].adapter)  # as Training hands it on
    evaluation.send(early)
    deadline = time.monotonic() + 5
    while not site.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert site.calls == [early.method]  # at the site while the job is still RUNNING
    assert ledger.transition(plan.job_id, EVALUATING)
    assert evaluation.finish(candidates)
    assert sorted(site.calls) == sorted(METHODS)  # the early one is not sent again
    assert candidates[-1].metrics == {"error_rate": 10.0, "teacher_error_rate": 5.0}


def test_an_abandoned_attempt_sends_nothing_more(tmp_path) -> None:
    ledger, site = Ledger(tmp_path / "ledger.db"), SlowSite()
    plan, candidates = _evaluating(ledger, state=RUNNING)
    evaluation = Evaluation(ledger, site, plan)
    for candidate in candidates:
        evaluation.send(candidate)
    evaluation.abandon()  # a lost Ray worker: the job is retried from its start
    time.sleep(0.5)
    assert len(site.calls) <= EVALUATIONS_IN_FLIGHT  # those already at the site, no more
    evaluation.send(candidates[0])
    time.sleep(0.3)
    assert len(site.calls) <= EVALUATIONS_IN_FLIGHT
