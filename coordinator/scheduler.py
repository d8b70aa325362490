"""Runs jobs on Ray: a bounded pool of driver threads, each driving one job's training, and a separate
pool that waits for the sites' evaluations, so a dead or slow site never holds a training driver.

PENDING -> (resolve modules) -> RUNNING (one Ray task per candidate method, progress streamed; the owning
site scores each candidate as soon as it is trained) -> EVALUATING (the last scores come in) -> claim +
gate + net commit -> SUCCEEDED | REJECTED. Ray system failures (a dead worker or node) are retried up to max_attempts;
errors raised by the training code itself are deterministic and end that candidate at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from ray import exceptions as rex

from coordinator import ledger as L
from coordinator.committer import Committer, Evaluation, describe_errors
from coordinator.convert import spec_from_dict, state_event
from coordinator.events import EventHub
from coordinator.jobs import CandidateResult, JobPlan, Progress
from coordinator.netbook import NetBook
from coordinator.resolve import ResolveError, resolve_plan
from coordinator.site_client import SiteClient
from coordinator.store import Store
from coordinator.training import RETRYABLE, Training
from protos.nt.v1 import control_pb2

log = logging.getLogger(__name__)
MAX_EVALUATIONS = 16  # jobs whose candidates are out with their sites at once


class Scheduler:
    def __init__(self, ledger: L.Ledger, store: Store, store_url: str, events: EventHub,
                 sites: SiteClient, netbook: NetBook, max_concurrent: int = 2, max_attempts: int = 3,
                 progress_every: int = 10, max_gaps: dict[str, float] | None = None,
                 max_evaluations: int = MAX_EVALUATIONS) -> None:
        self.ledger, self.store, self.store_url, self.events = ledger, store, store_url, events
        self.sites, self.netbook, self.max_attempts = sites, netbook, max_attempts
        self.committer = Committer(ledger, events, sites, netbook, max_gaps)
        self.training = Training(progress_every, self._progress)
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="job-driver")
        # waiting on a site costs a thread and no CPU: many may wait while the drivers train other jobs
        self._evaluations = ThreadPoolExecutor(max_evaluations, thread_name_prefix="job-evaluation")
        self._closing = threading.Event()

    def submit(self, job_id: str) -> None:
        self._pool.submit(self._drive_logged, job_id)

    def cancel(self, job_id: str) -> bool:
        """True if the job was not yet terminal nor committing, and is now CANCELLED."""
        if not self.ledger.transition(job_id, L.CANCELLED, error="cancelled by an admin"):
            return False
        self.events.publish(state_event(job_id, L.CANCELLED, "cancelled by an admin"))
        self.training.stop(job_id)
        return True

    def shutdown(self) -> None:
        """Stops drivers; jobs cut off stay RUNNING in the ledger and are re-queued on restart."""
        self._closing.set()
        for job in self.ledger.list_jobs((L.RUNNING,)):
            self.training.stop(job.id)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._evaluations.shutdown(wait=True, cancel_futures=True)  # cut-off evaluations re-run on restart

    # one job

    def _drive_logged(self, job_id: str) -> None:
        try:
            self._drive(job_id)
        except Exception as exc:  # a driver bug must fail its job, not vanish with the thread
            log.exception("job %s: driver crashed", job_id)
            self.committer.fail(job_id, f"coordinator error: {type(exc).__name__}: {exc}")

    def _drive(self, job_id: str) -> None:
        job = self.ledger.get_job(job_id)
        if job is None or job.state != L.PENDING or self._closing.is_set():
            return
        try:
            plan = resolve_plan(self.store, self.store_url, job_id, spec_from_dict(job.spec))
        except ResolveError as exc:
            self.committer.fail(job_id, str(exc))
            return
        trained = self._train_with_retries(plan)
        if trained is None:
            return
        candidates, evaluation = trained
        if self._closing.is_set():
            evaluation.abandon()
            return
        if not any(c.adapter for c in candidates):
            evaluation.abandon()
            self.committer.fail(job_id, describe_errors(candidates), candidates=[c.to_doc() for c in candidates])
            return
        first = next(c.adapter for c in candidates if c.adapter)
        if self.committer.move(job_id, L.EVALUATING, adapter_module_id=first.module_id,
                               candidates=[c.to_doc() for c in candidates]):
            self._evaluations.submit(self._evaluate_logged, plan, candidates, evaluation)  # this driver is free now
        else:
            evaluation.abandon()  # cancelled meanwhile

    def _evaluate_logged(self, plan: JobPlan, candidates: list[CandidateResult], evaluation: Evaluation) -> None:
        if self._closing.is_set():
            evaluation.abandon()
            return  # left EVALUATING: re-queued on restart
        try:
            self.committer.evaluate_and_commit(plan, candidates, evaluation)
        except Exception as exc:  # as in _drive_logged: a bug fails the job instead of vanishing
            log.exception("job %s: evaluation crashed", plan.job_id)
            self.committer.fail(plan.job_id, f"coordinator error: {type(exc).__name__}: {exc}")

    def _train_with_retries(self, plan: JobPlan) -> tuple[list[CandidateResult], Evaluation] | None:
        """The candidates of the attempt that ended, and its evaluation (already scoring them)."""
        job_id = plan.job_id
        while not self._closing.is_set():
            if not self.committer.move(job_id, L.RUNNING, error=""):
                return None  # cancelled meanwhile
            evaluation = self.committer.evaluation(plan)
            try:
                try:
                    return self.training.run(plan, lambda: self._wanted(job_id), evaluation.send), evaluation
                except BaseException:
                    evaluation.abandon()  # this attempt's figures are never used
                    raise
            except rex.TaskCancelledError:
                return None  # by cancel() (already CANCELLED) or by shutdown (re-queued on restart)
            except RETRYABLE as exc:
                attempts = self.ledger.require_job(job_id).attempts
                if attempts >= self.max_attempts:
                    self.committer.fail(job_id, f"Ray worker failed {attempts} times; last: "
                                                f"{type(exc).__name__}: {exc}")
                    return None
                log.warning("job %s: Ray worker failed (%s); retrying", job_id, exc)
                self.committer.move(job_id, L.PENDING, error=f"retrying after {type(exc).__name__}")
        return None

    def _wanted(self, job_id: str) -> bool:
        return not self._closing.is_set() and self.ledger.require_job(job_id).state == L.RUNNING

    def _progress(self, job_id: str, item: Progress) -> None:
        self.events.publish(control_pb2.JobEvent(
            job_id=job_id, state=control_pb2.RUNNING, step=item.step, total_steps=item.total, loss=item.loss,
            distill_loss=item.distill_loss, task_loss=item.task_loss, method=item.method))
