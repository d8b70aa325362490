"""Prometheus metrics of the coordinator, and a gRPC interceptor that counts and times every RPC.

Each coordinator owns its own CollectorRegistry (tests run several in one process) and serves it
on its own HTTP `/metrics` port. Metric names are the contract with deploy/prometheus and
deploy/grafana: a test checks that every name used there is exported here.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from coordinator.job_states import STATES as JOB_STATES
from coordinator.promotion import gap, primary_metric, split_metrics

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120)
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, quality_margin: float = 5.0):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Gauge("transplant_jobs", "Transplant jobs by state", ["state"], registry=r)
        self.jobs_finished = Counter("transplant_jobs_finished_total", "Jobs that ended, by final state",
                                     ["state", "task", "method"], registry=r)
        self.job_duration = Histogram("transplant_job_duration_seconds", "Wall time of finished jobs",
                                      ["task", "method"], buckets=DURATION_BUCKETS, registry=r)
        self.job_loss = Gauge("transplant_job_loss", "Latest loss of running jobs by part (loss, distill, task)",
                              ["job_id", "category", "task", "part"], registry=r)
        self.job_progress = Gauge("transplant_job_progress_ratio", "Step / total steps of running jobs",
                                  ["job_id", "category", "task"], registry=r)
        self.adapter_quality = Gauge("transplant_adapter_quality",
                                     "Quality of a transplanted adapter as evaluated by its site (percent)",
                                     ["category", "task", "method", "metric"], registry=r)
        self.teacher_quality = Gauge("transplant_teacher_quality",
                                     "Quality of the category's own teacher on the same test set (percent)",
                                     ["category", "task", "metric"], registry=r)
        self.route_gap = Gauge("transplant_route_gap_points",
                               "Points a route's adapter trails its teacher in the task's primary metric "
                               "(<= 0: as good as the teacher or better)", ["category", "task", "metric"], registry=r)
        self.max_gap = Gauge("transplant_max_gap_points", "The promotion gate per task (points behind the teacher)",
                             ["task"], registry=r)
        self.adapter_samples = Gauge("transplant_adapter_samples", "Labelled samples the adapter was learned from",
                                     ["category", "task", "method"], registry=r)
        self.bytes_received = Counter("transplant_bytes_received_total", "Module bytes uploaded by sites",
                                      ["site"], registry=r)
        self.bytes_sent = Counter("transplant_bytes_sent_total", "Module bytes downloaded", registry=r)
        self.rpc_requests = Counter("transplant_grpc_requests_total", "gRPC requests by method and status code",
                                    ["method", "code"], registry=r)
        self.rpc_latency = Histogram("transplant_grpc_request_seconds", "gRPC request latency", ["method"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.ray_cpus = Gauge("transplant_ray_cpus", "CPUs in the Ray cluster", registry=r)
        self.ray_gpus = Gauge("transplant_ray_gpus", "GPUs in the Ray cluster", registry=r)
        self.ray_nodes = Gauge("transplant_ray_nodes", "Alive Ray nodes (workers)", registry=r)
        self.modules_stored = Gauge("transplant_modules_stored", "Module records in the store by role", ["role"],
                                    registry=r)
        self.storage_errors = Counter("transplant_storage_errors_total", "Object store operations that failed",
                                      ["operation"], registry=r)
        self.site_last_seen = Gauge("transplant_site_last_seen_timestamp_seconds", "Last heartbeat of each site",
                                    ["site"], registry=r)
        self.up = Gauge("transplant_coordinator_up", "1 while the coordinator serves", registry=r)
        self.quality_margin = Gauge("transplant_quality_margin_points",
                                    "Alert when an adapter is worse than its teacher by more than this (points)",
                                    registry=r)
        for state in JOB_STATES:
            self.jobs.labels(state=state).set(0)
        self.quality_margin.set(quality_margin)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP; port 0 picks a free one. Returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def stop(self) -> None:
        server = getattr(self, "_http", None)
        if server is not None:
            server.shutdown()
            server.server_close()

    def record_job_counts(self, counts: dict[str, int]) -> None:
        for state in JOB_STATES:
            self.jobs.labels(state=state).set(counts.get(state, 0))

    def record_progress(self, job_id: str, category: str, task: str, step: int, total: int,
                        parts: dict[str, float]) -> None:
        self.job_progress.labels(job_id, category, task).set(step / max(total, 1))
        for part, value in parts.items():
            self.job_loss.labels(job_id, category, task, part).set(value)

    def forget_job(self, job_id: str) -> None:
        """Running-job series end with the job (bounded label cardinality)."""
        for gauge in (self.job_loss, self.job_progress):
            for labels in [k for k in gauge._metrics if k[0] == job_id]:  # prometheus_client keeps label tuples
                gauge.remove(*labels)

    def record_job_end(self, state: str, task: str, method: str, seconds: float | None) -> None:
        self.jobs_finished.labels(state=state, task=task, method=method).inc()
        if seconds is not None and state == "SUCCEEDED":
            self.job_duration.labels(task=task, method=method).observe(seconds)

    def record_quality(self, category: str, task: str, method: str, samples: int,
                       metrics: dict[str, float]) -> None:
        """Site-reported metrics: `error_rate`, `iou`, ... and `teacher_<metric>` for the teacher."""
        for name, value in metrics.items():
            if name.startswith("teacher_"):
                self.teacher_quality.labels(category, task, name.removeprefix("teacher_")).set(value)
            else:
                self.adapter_quality.labels(category, task, method, name).set(value)
        self.adapter_samples.labels(category, task, method).set(samples)
        metric = primary_metric(task, metrics)
        own, teacher = split_metrics(metrics)
        if metric in own and metric in teacher:
            self.route_gap.labels(category, task, metric).set(gap(metric, own[metric], teacher[metric]))

    def record_gates(self, gates: dict[str, float]) -> None:
        for task, points in gates.items():
            self.max_gap.labels(task).set(points)


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code() if hasattr(context, "code") else None
    if code is None or code == grpc.StatusCode.OK or isinstance(code, int):
        return "OK" if not code else str(code)
    return code.name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status code, and times it (streams included)."""

    def __init__(self, metrics: CoordinatorMetrics):
        self.metrics = metrics

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        for kind in kinds:
            inner = getattr(handler, kind)
            if inner is not None:
                wrapped = self._wrap(inner, method, streaming_reply=kind.endswith("stream"))
                return handler._replace(**{kind: wrapped})
        return handler

    def _wrap(self, inner: Callable, method: str, streaming_reply: bool) -> Callable:
        metrics = self.metrics

        def finish(context: grpc.ServicerContext, start: float, failed: BaseException | None) -> None:
            code = _code_name(context)
            if failed is not None and code == "OK":
                code = "UNKNOWN"
            metrics.rpc_requests.labels(method=method, code=code).inc()
            metrics.rpc_latency.labels(method=method).observe(time.perf_counter() - start)

        if streaming_reply:
            def stream(request: Any, context: grpc.ServicerContext):
                start, failed = time.perf_counter(), None
                try:
                    yield from inner(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    finish(context, start, failed)
            return stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            start, failed = time.perf_counter(), None
            try:
                return inner(request, context)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                finish(context, start, failed)
        return unary
