"""Feeds the coordinator's Prometheus metrics: job events as they happen, slower facts on a timer."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from common.patterns import MODULE_ROLES
from coordinator import ledger as L
from coordinator.ledger import Ledger
from coordinator.store import ObjectStore, Store, StoreError
from coordinator.manifests import list_module_records
from coordinator.telemetry import CoordinatorMetrics
from coordinator.job_states import TERMINAL_PB
from protos.nt.v1 import control_pb2

log = logging.getLogger(__name__)


class Observer:
    def __init__(self, metrics: CoordinatorMetrics, ledger: Ledger, store: Store,
                 refresh_s: float = 5.0) -> None:
        self.metrics, self.ledger, self.store = metrics, ledger, store
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-refresh", daemon=True)

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.refresh_s + 1)

    def on_event(self, event: control_pb2.JobEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # metrics must never break a job
            log.exception("metrics: could not record event of job %s", event.job_id)

    def _on_event(self, event: control_pb2.JobEvent) -> None:
        job = self.ledger.get_job(event.job_id)
        if job is None:
            return
        category, task = job.spec.get("category", ""), job.spec.get("task", "")
        if event.total_steps:  # progress: no state changed, so the job counts stay as they are
            parts = {"loss": event.loss, "distill": event.distill_loss, "task": event.task_loss}
            self.metrics.record_progress(job.id, category, task, event.step, event.total_steps, parts)
            return
        if event.state in TERMINAL_PB:
            self.metrics.forget_job(job.id)
            method = job.spec.get("method", "")
            seconds = job.finished - job.started if job.finished and job.started else None
            self.metrics.record_job_end(job.state, task, method, seconds)
            if job.state == L.SUCCEEDED:
                self.metrics.record_quality(category, task, method, int(job.spec.get("samples", 0)), job.metrics)
        self.metrics.record_job_counts(self.ledger.count_jobs())

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def refresh(self) -> None:
        """Job counts, sites, modules stored, Ray resources."""
        self.metrics.record_job_counts(self.ledger.count_jobs())
        for site in self.ledger.list_sites():
            self.metrics.site_last_seen.labels(site.site_id).set(site.last_seen)
        try:
            counts: dict[str, int] = {}
            for record in list_module_records(self.store):
                counts[record.role] = counts.get(record.role, 0) + 1
            for role in MODULE_ROLES:
                self.metrics.modules_stored.labels(role).set(counts.get(role, 0))
        except StoreError:
            self.metrics.storage_errors.labels("list").inc()
        self._ray_resources()

    def _ray_resources(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        try:
            resources = ray.cluster_resources()
            self.metrics.ray_cpus.set(resources.get("CPU", 0))
            self.metrics.ray_gpus.set(resources.get("GPU", 0))
            self.metrics.ray_nodes.set(sum(1 for node in ray.nodes() if node.get("Alive")))
        except Exception:  # Ray's GCS briefly unreachable: keep the last values
            log.debug("metrics: Ray resources unavailable", exc_info=True)


class CountingStore:
    """Delegates to a store and counts failed operations (the StorageErrors alert)."""

    def __init__(self, inner: ObjectStore, metrics: CoordinatorMetrics) -> None:
        self._inner, self._metrics = inner, metrics

    def __getattr__(self, name: str) -> Any:  # only called for what this class does not define
        target = getattr(self._inner, name)
        return _counting(target, name, self._metrics) if callable(target) else target


def _counting(fn: Callable, operation: str, metrics: CoordinatorMetrics) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError as exc:
            if type(exc).__name__ != "BlobNotFoundError":  # a missing blob is an answer, not a failure
                metrics.storage_errors.labels(operation).inc()
            raise
    return call
