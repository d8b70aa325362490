"""Runs jobs on Ray: a bounded pool of driver threads, each iterating one job's Ray streaming generator.

PENDING -> (resolve modules) -> RUNNING (Ray task, progress streamed) -> EVALUATING (owning site)
-> manifest commit -> SUCCEEDED. Ray system failures (a dead worker or node) are retried up to
max_attempts; errors raised by the training code itself are deterministic and fail the job at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import exceptions as rex

from coordinator import ledger as L
from coordinator.convert import spec_from_dict, state_event
from coordinator.events import EventHub
from coordinator.netbook import NetBook
from coordinator.resolve import ResolveError, resolve_plan
from coordinator.site_client import EvaluationError, SiteClient
from coordinator.store import ObjectStore, StoreError
from coordinator.worker import JobPlan, run_plan
from protos.nt.v1 import common_pb2, control_pb2

log = logging.getLogger(__name__)
STOP_GRACE_S = 2.0
RETRYABLE = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.OwnerDiedError,
             rex.ObjectLostError, rex.RaySystemError)


@ray.remote(num_returns="streaming", max_retries=0)  # retries are the scheduler's, counted in the ledger
def transplant_task(plan: JobPlan, progress_every: int):
    yield from run_plan(plan, progress_every)


class Scheduler:
    def __init__(self, ledger: L.Ledger, store: ObjectStore, store_url: str, events: EventHub,
                 sites: SiteClient, netbook: NetBook, max_concurrent: int = 2, max_attempts: int = 3,
                 progress_every: int = 10) -> None:
        self.ledger, self.store, self.store_url, self.events = ledger, store, store_url, events
        self.sites, self.netbook = sites, netbook
        self.max_attempts, self.progress_every = max_attempts, progress_every
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="job-driver")
        self._lock = threading.Lock()
        self._running: dict[str, object] = {}  # job id -> its ObjectRefGenerator
        self._stop_asked: dict[str, float] = {}  # job id -> when a (gentle) ray.cancel was sent
        self._closing = threading.Event()

    def submit(self, job_id: str) -> None:
        self._pool.submit(self._drive_logged, job_id)

    def cancel(self, job_id: str) -> bool:
        """True if the job was not yet terminal and is now CANCELLED."""
        if not self.ledger.transition(job_id, L.CANCELLED, error="cancelled by an admin"):
            return False
        self.events.publish(state_event(job_id, L.CANCELLED, "cancelled by an admin"))
        self._stop(job_id)
        return True

    def _stop(self, job_id: str) -> None:
        with self._lock:
            generator = self._running.get(job_id)
            self._stop_asked.setdefault(job_id, time.monotonic())
        if generator is not None:
            ray.cancel(generator)

    def shutdown(self) -> None:
        """Stops drivers; jobs cut off stay RUNNING in the ledger and are re-queued on restart."""
        self._closing.set()
        with self._lock:
            running = list(self._running)
        for job_id in running:
            self._stop(job_id)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # one job

    def _drive_logged(self, job_id: str) -> None:
        try:
            self._drive(job_id)
        except Exception as exc:  # a driver bug must fail its job, not vanish with the thread
            log.exception("job %s: driver crashed", job_id)
            self._fail(job_id, f"coordinator error: {type(exc).__name__}: {exc}")

    def _drive(self, job_id: str) -> None:
        job = self.ledger.get_job(job_id)
        if job is None or job.state != L.PENDING or self._closing.is_set():
            return
        try:
            plan = resolve_plan(self.store, self.store_url, job_id, spec_from_dict(job.spec))
        except ResolveError as exc:
            self._fail(job_id, str(exc))
            return
        done = self._train_with_retries(plan)
        if done is None or self._closing.is_set() or not self._move(job_id, L.EVALUATING, adapter_module_id=done["module_id"]):
            return
        self._evaluate_and_commit(plan, done)

    def _train_with_retries(self, plan: JobPlan) -> dict | None:
        job_id = plan.job_id
        while not self._closing.is_set():
            if not self._move(job_id, L.RUNNING, error=""):
                return None  # cancelled meanwhile
            try:
                return self._train(plan)
            except rex.TaskCancelledError:
                return None  # by cancel() (already CANCELLED) or by shutdown (re-queued on restart)
            except rex.RayTaskError as exc:
                self._fail(job_id, f"training failed: {_cause(exc)}")
                return None
            except RETRYABLE as exc:
                attempts = self.ledger.get_job(job_id).attempts
                if attempts >= self.max_attempts:
                    self._fail(job_id, f"Ray worker failed {attempts} times; last: {type(exc).__name__}: {exc}")
                    return None
                log.warning("job %s: Ray worker failed (%s); retrying", job_id, exc)
                self._move(job_id, L.PENDING, error=f"retrying after {type(exc).__name__}")
        return None

    def _train(self, plan: JobPlan) -> dict:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
        generator = transplant_task.options(num_gpus=1 if use_gpu else 0).remote(plan, self.progress_every)
        with self._lock:
            self._running[plan.job_id] = generator
        try:
            # cancel() or shutdown() may have run before the generator was registered
            if self._closing.is_set() or self.ledger.get_job(plan.job_id).state != L.RUNNING:
                self._stop(plan.job_id)
            done = None
            for ref in generator:
                self._escalate_stop(plan.job_id, generator)
                item = ray.get(ref)
                if item["kind"] == "progress":
                    self.events.publish(_progress_event(plan.job_id, item))
                else:
                    done = item
            if done is None:
                raise rex.TaskCancelledError()
            return done
        finally:
            with self._lock:
                self._running.pop(plan.job_id, None)
                self._stop_asked.pop(plan.job_id, None)

    def _escalate_stop(self, job_id: str, generator) -> None:
        """A gentle cancel that lands just as the task starts can be lost; still running: kill it."""
        with self._lock:
            asked = self._stop_asked.get(job_id)
        if asked is not None and time.monotonic() - asked > STOP_GRACE_S:
            ray.cancel(generator, force=True)
            raise rex.TaskCancelledError()

    def _evaluate_and_commit(self, plan: JobPlan, done: dict) -> None:
        job_id = plan.job_id
        ref = common_pb2.ModuleRef(module_id=done["module_id"], sha256=done["sha256"], size_bytes=done["size_bytes"])
        try:
            metrics = self.sites.evaluate(plan, ref, done["config_json"])
        except EvaluationError as exc:
            self._fail(job_id, str(exc))
            return
        if self.ledger.get_job(job_id).state != L.EVALUATING:
            return  # cancelled while the site evaluated: the net stays as it was
        try:
            version = self.netbook.commit_job(plan, done["module_id"], done["sha256"],
                                              _config_doc(done["config_json"]), metrics)
        except (StoreError, ValueError) as exc:
            self._fail(job_id, f"could not commit the transplant net: {exc}")
            return
        self._move(job_id, L.SUCCEEDED, metrics=metrics, net_version=version,
                   message=f"net version {version}")

    # ledger + events together

    def _move(self, job_id: str, state: str, message: str = "", **fields) -> bool:
        if not self.ledger.transition(job_id, state, **fields):
            return False
        self.events.publish(state_event(job_id, state, message or fields.get("error", "")))
        return True

    def _fail(self, job_id: str, reason: str) -> None:
        log.warning("job %s failed: %s", job_id, reason)
        self._move(job_id, L.FAILED, error=reason)


def _cause(exc: rex.RayTaskError) -> str:
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]


def _config_doc(config_json: str) -> dict:
    return json.loads(config_json)


def _progress_event(job_id: str, item: dict) -> control_pb2.JobEvent:
    return control_pb2.JobEvent(
        job_id=job_id, state=control_pb2.RUNNING, step=item["step"], total_steps=item["total"],
        loss=item.get("loss", 0.0), distill_loss=item.get("distill_loss", 0.0),
        task_loss=item.get("task_loss", 0.0))
