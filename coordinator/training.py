"""The Ray side of a job: one streaming Ray task per candidate method, all in parallel, sharing one
fetch of the job's modules; progress is forwarded as it streams, each trained candidate is handed on at
once (to be evaluated while the others train); cancel stops every task of a job.

`TRAIN_BODY` is the function each candidate's Ray task runs (coordinator.worker.run_plan). It is
passed to the task as an argument, so a test can swap it in the driver (e.g. for a body that crashes
its worker) without any test hook in the production code path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import exceptions as rex

from coordinator.jobs import CandidateResult, JobPlan, Progress, TrainedAdapter
from coordinator.worker import fetch_blobs, run_plan

STOP_GRACE_S = 2.0
RETRYABLE = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.OwnerDiedError,
             rex.ObjectLostError, rex.RaySystemError)
TRAIN_BODY = run_plan


@ray.remote(num_returns="streaming", max_retries=0)  # retries are the scheduler's, counted in the ledger
def transplant_task(body: Callable, plan: JobPlan, progress_every: int, blobs: dict):
    yield from body(plan, progress_every, blobs)


@ray.remote(max_retries=0)
def fetch_task(plan: JobPlan) -> dict:
    return fetch_blobs(plan)


class Training:
    """Runs the candidates of jobs on Ray; one instance per scheduler, jobs keyed by id."""

    def __init__(self, progress_every: int, on_progress: Callable[[str, Progress], None]) -> None:
        self.progress_every, self.on_progress = progress_every, on_progress
        self._lock = threading.Lock()
        self._running: dict[str, list] = {}      # job id -> its candidates' ObjectRefGenerators
        self._stop_asked: dict[str, float] = {}  # job id -> when a (gentle) ray.cancel was sent

    def stop(self, job_id: str) -> None:
        with self._lock:
            generators = list(self._running.get(job_id, ()))
            self._stop_asked.setdefault(job_id, time.monotonic())
        for generator in generators:
            ray.cancel(generator)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)
            self._stop_asked.pop(job_id, None)

    def run(self, plan: JobPlan, still_wanted: Callable[[], bool],
            on_trained: Callable[[CandidateResult], None] = lambda _: None) -> list[CandidateResult]:
        """Every candidate's adapter or training error. `on_trained` gets each trained candidate as soon as
        its task ends, while the others still train. Raises TaskCancelledError when stopped and a
        RETRYABLE error when Ray lost a worker (the whole job is retried)."""
        methods = plan.methods
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        blobs = fetch_task.remote(plan)  # one read of the modules, shared through Ray's object store
        task = transplant_task.options(num_gpus=1 / len(methods) if use_gpu else 0)
        generators = [task.remote(TRAIN_BODY, plan.for_method(m), self.progress_every, blobs) for m in methods]
        with self._lock:
            self._running[plan.job_id] = generators
        try:
            if not still_wanted():  # cancel() or shutdown() may have run before the tasks were registered
                self.stop(plan.job_id)
            with ThreadPoolExecutor(len(methods), thread_name_prefix="candidate") as pool:
                futures = [pool.submit(self._follow, plan.job_id, m, g, on_trained)
                           for m, g in zip(methods, generators)]
                outcomes = [_outcome(m, f.exception(), f) for m, f in zip(methods, futures)]
        finally:
            self.forget(plan.job_id)
        for outcome in outcomes:  # the job-level failures first: a stop, then a lost worker
            if isinstance(outcome, rex.TaskCancelledError):
                raise outcome
        results: list[CandidateResult] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        return results

    def _follow(self, job_id: str, method: str, generator,
                on_trained: Callable[[CandidateResult], None]) -> TrainedAdapter:
        done = None
        try:
            for ref in generator:
                self._escalate_stop(job_id, generator)
                item = ray.get(ref)
                if isinstance(item, Progress):
                    self.on_progress(job_id, item)
                else:
                    done = item
        except RETRYABLE:
            self.stop(job_id)  # a lost worker retries the whole job: stop the other candidates
            raise
        if done is None:
            raise rex.TaskCancelledError()
        on_trained(CandidateResult(method, done))
        return done

    def _escalate_stop(self, job_id: str, generator) -> None:
        """A gentle cancel that lands just as the task starts can be lost; still running: kill it."""
        with self._lock:
            asked = self._stop_asked.get(job_id)
        if asked is not None and time.monotonic() - asked > STOP_GRACE_S:
            ray.cancel(generator, force=True)
            raise rex.TaskCancelledError()


def _outcome(method: str, error: BaseException | None, future) -> CandidateResult | BaseException:
    """A candidate's result; a training error stays the candidate's, a stop or lost worker the job's."""
    if error is None:
        return CandidateResult(method, future.result())
    if isinstance(error, rex.RayTaskError) and not isinstance(error, (rex.TaskCancelledError, *RETRYABLE)):
        return CandidateResult(method, error=f"training failed: {cause(error)}")
    return error


def cause(exc: rex.RayTaskError) -> str:
    found = getattr(exc, "cause", None)
    return f"{type(found).__name__}: {found}" if found is not None else str(exc).splitlines()[0]
