"""The owning site evaluates every candidate (each as soon as it is trained), the best one is proposed to
its net, and the job ends SUCCEEDED (it entered the net) or REJECTED (the gate said no; the net is unchanged).

The commit is claimed in the ledger first (state check and claim in one guarded UPDATE): a cancel
that came first wins and nothing is committed; once claimed, cancels are refused. The claim keeps the
proposal, so `repair` finishes a commit cut off by a coordinator crash (found in the net: SUCCEEDED;
not found: decided and committed now).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from coordinator import ledger as L
from coordinator.convert import state_event
from coordinator.events import EventHub
from coordinator.jobs import CandidateResult, JobPlan
from coordinator.netbook import NetBook, Proposal, proposal_for
from coordinator.promotion import best_candidate, max_gap_for
from coordinator.site_client import EvaluationError, SiteClient
from coordinator.store import StoreError
from protos.nt.v1 import common_pb2

log = logging.getLogger(__name__)
EVALUATIONS_IN_FLIGHT = 2  # candidates of one job the site evaluates at once (an `auto` job has up to 7)


def describe_errors(candidates: list[CandidateResult]) -> str:
    if len(candidates) == 1:
        return candidates[0].error or "no figures"
    return "; ".join(f"{c.method}: {c.error or 'no figures'}" for c in candidates)


class Evaluation:
    """One training attempt's candidates out with the owning site. Each is sent as soon as it is trained,
    while its slower siblings still train (an `auto` job's fast candidates are scored during the slowest
    one's training), EVALUATIONS_IN_FLIGHT at a time: the site answers Evaluate on a thread pool, one
    download and forward pass per call. An attempt that is retried or stopped is abandoned: what it had
    not yet sent is never sent, and its figures are never used."""

    def __init__(self, ledger: L.Ledger, sites: SiteClient, plan: JobPlan) -> None:
        self.ledger, self.sites, self.plan = ledger, sites, plan
        self._pool = ThreadPoolExecutor(EVALUATIONS_IN_FLIGHT, thread_name_prefix="evaluate")
        self._sent: dict[str, Future[dict[str, float] | None]] = {}
        self._lock = threading.Lock()
        self._abandoned = False

    def send(self, candidate: CandidateResult) -> None:
        """Starts scoring a trained candidate (once per method); a no-op once abandoned."""
        if candidate.adapter is None:
            return
        with self._lock:
            if not self._abandoned and candidate.method not in self._sent:
                self._sent[candidate.method] = self._pool.submit(self._one, candidate)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
        self._pool.shutdown(wait=False, cancel_futures=True)  # calls already at the site end on their own

    def finish(self, candidates: list[CandidateResult]) -> bool:
        """Sends what was not yet sent, waits for every call and fills in each trained candidate's figures.
        False once the job is no longer EVALUATING (cancelled: nothing more is sent). The first
        EvaluationError, in candidate order, is raised after the others ended."""
        for candidate in candidates:
            self.send(candidate)
        trained = [c for c in candidates if c.adapter is not None]
        try:
            futures = [self._sent[c.method] for c in trained]
            wait(futures)
            figures = [f.result() for f in futures]
        finally:
            self._pool.shutdown(wait=False)
        for candidate, metrics in zip(trained, figures):
            candidate.metrics = metrics or {}
        return all(m is not None for m in figures) and self._state() == L.EVALUATING

    def _one(self, candidate: CandidateResult) -> dict[str, float] | None:
        # still training (RUNNING) or waiting for the site (EVALUATING); anything else: cancelled meanwhile
        if self._abandoned or self._state() not in (L.RUNNING, L.EVALUATING):
            return None
        adapter = candidate.adapter
        assert adapter is not None
        ref = common_pb2.ModuleRef(module_id=adapter.module_id, sha256=adapter.sha256, size_bytes=adapter.size_bytes)
        return self.sites.evaluate(self.plan.for_method(candidate.method), ref, adapter.config_json)

    def _state(self) -> str:
        return self.ledger.require_job(self.plan.job_id).state


class Committer:
    def __init__(self, ledger: L.Ledger, events: EventHub, sites: SiteClient, netbook: NetBook,
                 max_gaps: dict[str, float] | None = None) -> None:
        self.ledger, self.events, self.sites, self.netbook = ledger, events, sites, netbook
        self.max_gaps = dict(max_gaps or {})

    # ledger + events together

    def move(self, job_id: str, state: str, message: str = "", **fields) -> bool:
        if not self.ledger.transition(job_id, state, **fields):
            return False
        self.events.publish(state_event(job_id, state, message or fields.get("reason") or fields.get("error", "")))
        return True

    def fail(self, job_id: str, reason: str, **fields) -> None:
        log.warning("job %s failed: %s", job_id, reason)
        self.move(job_id, L.FAILED, error=reason, **fields)

    # one job

    def evaluation(self, plan: JobPlan) -> Evaluation:
        """A fresh evaluation for one training attempt of `plan` (its candidates are sent as they train)."""
        return Evaluation(self.ledger, self.sites, plan)

    def evaluate_and_commit(self, plan: JobPlan, candidates: list[CandidateResult],
                            evaluation: Evaluation | None = None) -> None:
        """`evaluation` holds the candidates already sent while their siblings trained; the rest go now."""
        job_id = plan.job_id
        try:
            if not (evaluation or self.evaluation(plan)).finish(candidates):
                return  # cancelled while the site evaluated: the net stays as it was
        except EvaluationError as exc:
            self.fail(job_id, str(exc), candidates=[c.to_doc() for c in candidates])
            return
        best = best_candidate(plan.config.task, candidates)
        if best is None:
            self.fail(job_id, f"no candidate has the task's primary figure ({describe_errors(candidates)})",
                      candidates=[c.to_doc() for c in candidates])
            return
        best.chosen = True
        assert best.adapter is not None  # best_candidate only chooses trained candidates
        proposal = proposal_for(plan, best, max_gap_for(plan.config.task, plan.max_gap, self.max_gaps))
        claim = {"at": time.time(), "proposal": proposal.to_doc()}
        if not self.ledger.claim_commit(job_id, claim, candidates=[c.to_doc() for c in candidates],
                                        metrics=best.metrics, adapter_module_id=best.adapter.module_id):
            return  # cancelled just now: the claim lost, nothing is committed
        self.commit_claimed(job_id, proposal)

    def commit_claimed(self, job_id: str, proposal: Proposal) -> None:
        """Only the holder of the job's commit claim calls this: the gate, the net, the job's end."""
        try:
            version, decision = self.netbook.commit(proposal)
        except (StoreError, ValueError) as exc:
            self.fail(job_id, f"could not commit the transplant net: {exc}")
            return
        if version:
            self.move(job_id, L.SUCCEEDED, message=f"net {proposal.net} version {version}: {decision.reason}",
                      net_version=version, reason=decision.reason)
        else:
            log.info("job %s rejected: %s", job_id, decision.reason)
            self.move(job_id, L.REJECTED, reason=decision.reason)

    def repair(self) -> list[str]:
        """At start-up, before any job runs: finishes every commit a crash cut off. Returns their ids."""
        repaired = []
        for job in self.ledger.claimed_jobs():
            proposal = Proposal.from_doc(job.commit_claim["proposal"])
            version = self.netbook.find_commit(proposal.net, job.id, since=job.commit_claim.get("at", 0.0))
            if version:
                self.move(job.id, L.SUCCEEDED, net_version=version,
                          reason="committed before a coordinator restart")
            else:
                self.commit_claimed(job.id, proposal)
            log.info("job %s: a commit cut off by a restart was finished", job.id)
            repaired.append(job.id)
        return repaired
