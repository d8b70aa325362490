"""The SiteAgent gRPC service: evaluate a transplanted net on this site's held-out data.

The coordinator sends refs (module id + sha256) to an adapter, a generic task module and this
site's own category module. The site downloads them itself, checks every byte against the refs,
runs category -> adapter -> task on its local test split and returns only metrics.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from common.errors import RegistryError
from common.guard import RequireTokenInterceptor
from common.patterns import SHA256_HEX, check_target
from common.security import PLAINTEXT, ClientSecurity
from protos.nt.v1 import common_pb2, heartbeat_pb2, heartbeat_pb2_grpc, registry_pb2, site_pb2, site_pb2_grpc
from transplant.adapter import Adapter, AdapterConfigError, adapter_from_bytes
from transplant.architectures import SEGMENTATION
from transplant.data import Split
from transplant.metrics import evaluate
from transplant.net import join
from transplant.spec import (ModuleSpec, SpecError, SpecModule, WeightsError, build_module, output_shape,
                            weights_from_bytes)

from site_agent import teacher_io
from site_agent.telemetry import SiteMetrics
from site_agent.client import RegistryClient
from site_agent.errors import SiteAgentError

log = logging.getLogger("site_agent.service")


class EvaluateError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> EvaluateError:
    return EvaluateError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _eval_split(split: Split, task: str) -> Split:
    """Segmentation is scored on the positive images, as in transplant.teacher.evaluate_teacher."""
    return split.take((split.labels == 1).nonzero().flatten()) if task == SEGMENTATION else split


class SiteEvaluator:
    """The Evaluate logic without gRPC plumbing: workspace, local test split, registry downloads."""

    def __init__(self, workspace: Path | str, registry: RegistryClient):
        self.workspace, self.registry = Path(workspace), registry
        self.info = teacher_io.load_info(workspace)
        self.own_sha256 = teacher_io.category_sha256(workspace)
        self.category = teacher_io.load_spec_module(workspace)
        self.tasks = {t: teacher_io.load_spec_module(workspace, t) for t in self.info.tasks}
        self.test = teacher_io.eval_split(self.info)  # reloaded from the data source, never stored
        self._teacher: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def teacher_metrics(self, task: str) -> dict[str, float]:
        """The site's own teacher on the same split: the bar the transplant is compared with."""
        with self._lock:
            if task not in self._teacher:
                split = _eval_split(self.test, task)
                net = join(self.category, self.tasks[task])
                self._teacher[task] = evaluate(net, task, split.images, split.labels, split.masks)
            return self._teacher[task]

    def evaluate(self, request: site_pb2.EvaluateRequest) -> site_pb2.EvaluateReply:
        self._check_request(request)
        category = self._fetch_module(request.category_module, "category module", common_pb2.CATEGORY)
        task = self._fetch_module(request.task_module, f"{request.task} task module", common_pb2.TASK, request.task)
        adapter = self._fetch_adapter(request)
        _check_shapes(category, adapter, task)
        split = _eval_split(self.test, request.task)
        metrics = evaluate(join(category, task, adapter), request.task, split.images, split.labels, split.masks)
        metrics.update({f"teacher_{k}": v for k, v in self.teacher_metrics(request.task).items()})
        log.info("job %s: %s/%s on %d images: %s", request.job_id, request.category, request.task, len(split), metrics)
        return site_pb2.EvaluateReply(
            metrics=[common_pb2.Metric(name=k, value=float(v)) for k, v in sorted(metrics.items())],
            num_samples=len(split), site_id=self.info.site_id)

    def _check_request(self, request: site_pb2.EvaluateRequest) -> None:
        if request.task not in self.tasks:
            raise _invalid(f"site '{self.info.site_id}' has no '{request.task}' task to evaluate "
                           f"(it has: {', '.join(self.tasks)})")
        if request.category and request.category != self.info.category:
            raise _invalid(f"site '{self.info.site_id}' holds category '{self.info.category}', "
                           f"not '{request.category}'")
        for name, ref in (("adapter", request.adapter), ("task_module", request.task_module),
                          ("category_module", request.category_module)):
            if not ref.module_id or not SHA256_HEX.match(ref.sha256):
                raise _invalid(f"{name} ref needs a module_id and a lowercase hex sha256")
        if not request.adapter_config_json:
            raise _invalid("adapter_config_json is empty")
        if request.category_module.sha256 != self.own_sha256:
            # Evaluating another site's category module would run its net on our data: refuse.
            raise EvaluateError(grpc.StatusCode.PERMISSION_DENIED,
                                f"category module {request.category_module.module_id} is not site "
                                f"'{self.info.site_id}''s own (sha256 differs from the local module)")

    def _download(self, ref: common_pb2.ModuleRef, what: str) -> tuple[registry_pb2.ModuleInfo, bytes]:
        try:
            return self.registry.download(ref.module_id, ref.sha256, ref.size_bytes, f"{what} {ref.module_id}")
        except RegistryError as exc:  # unreachable: UNAVAILABLE; no code: the bytes failed our checks
            raise EvaluateError(exc.code or grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    def _fetch_module(self, ref: common_pb2.ModuleRef, what: str, role: int, task: str = "") -> SpecModule:
        info, data = self._download(ref, what)
        if info.role not in (role, common_pb2.MODULE_ROLE_UNSPECIFIED):
            raise _invalid(f"{what} {ref.module_id} is a {common_pb2.ModuleRole.Name(info.role)} module")
        if task and info.task and info.task != task:
            raise _invalid(f"{what} {ref.module_id} solves '{info.task}', not '{task}'")
        if role == common_pb2.CATEGORY and info.site_id and info.site_id != self.info.site_id:
            raise EvaluateError(grpc.StatusCode.PERMISSION_DENIED,
                                f"{what} {ref.module_id} belongs to site '{info.site_id}'")
        try:
            spec = ModuleSpec.loads(info.spec_json)
            return build_module(spec, weights_from_bytes(data, spec))
        except (SpecError, WeightsError) as exc:
            raise _invalid(f"{what} {ref.module_id} is malformed: {exc}") from None

    def _fetch_adapter(self, request: site_pb2.EvaluateRequest) -> Adapter:
        _, data = self._download(request.adapter, "adapter")
        try:
            return adapter_from_bytes(request.adapter_config_json, data)
        except AdapterConfigError as exc:
            raise _invalid(f"adapter {request.adapter.module_id} is malformed: {exc}") from None


def _check_shapes(category: SpecModule, adapter: Adapter, task: SpecModule) -> None:
    features = tuple(output_shape(category.spec))
    if adapter.config.channels != features[0]:
        raise _invalid(f"adapter has {adapter.config.channels} channels, the category module outputs {list(features)}")
    if tuple(task.spec.input_shape) != features:
        raise _invalid(f"task module reads {list(task.spec.input_shape)}, the category module outputs {list(features)}")


class SiteAgentServicer(site_pb2_grpc.SiteAgentServicer):
    def __init__(self, evaluator: SiteEvaluator, metrics: SiteMetrics | None = None):
        self.evaluator, self.metrics = evaluator, metrics

    def Evaluate(self, request: site_pb2.EvaluateRequest, context: grpc.ServicerContext) -> site_pb2.EvaluateReply:
        start = time.perf_counter()
        try:
            reply = self.evaluator.evaluate(request)
        except EvaluateError as exc:
            log.warning("job %s: evaluate refused: %s", request.job_id, exc)
            self._count(exc.code.name, start)
            context.abort(exc.code, str(exc))
        self._count("OK", start)
        return reply

    def _count(self, result: str, start: float) -> None:
        if self.metrics is not None:
            site = self.evaluator.info.site_id
            self.metrics.evaluations.labels(site, result).inc()
            self.metrics.evaluation_seconds.labels(site).observe(time.perf_counter() - start)


class Heartbeat:
    """Pings the coordinator every `interval_s` so it knows this site is alive and where it listens.

    An unreachable coordinator is logged once per outage and retried on the next tick.
    """

    def __init__(self, coordinator: str, site_id: str, endpoint: str, interval_s: float = 5.0,
                 security: ClientSecurity = PLAINTEXT):
        self.site_id, self.endpoint, self.interval_s = site_id, endpoint, interval_s
        self.channel = security.channel(check_target(coordinator))
        self.stub = heartbeat_pb2_grpc.HeartbeatStub(self.channel)
        self.pings, self.failures, self._down = 0, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{site_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def ping(self) -> bool:
        request = heartbeat_pb2.PingRequest(site_id=self.site_id, endpoint=self.endpoint)
        try:
            self.stub.Ping(request, timeout=max(1.0, self.interval_s))
        except grpc.RpcError as exc:
            self.failures += 1
            if not self._down:
                log.warning("heartbeat: coordinator not reachable (%s: %s); retrying every %.1fs",
                            exc.code().name, exc.details(), self.interval_s)
            self._down = True
            return False
        if self._down:
            log.info("heartbeat: coordinator reachable again")
        self.pings, self._down = self.pings + 1, False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ping()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(2.0, self.interval_s))
        self.channel.close()


@dataclass
class SiteAgentHandle:
    """A running site agent: its port and how to stop it (server, heartbeat, registry channel)."""

    port: int
    endpoint: str
    server: grpc.Server
    heartbeat: Heartbeat
    registry: RegistryClient
    evaluator: SiteEvaluator
    metrics: SiteMetrics | None = None
    metrics_port: int | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float = 2.0) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        self.heartbeat.stop()
        self.server.stop(grace).wait()
        self.registry.close()
        if self.metrics is not None:
            self.metrics.stop()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_site_agent(workspace: Path | str, coordinator: str, host: str = "127.0.0.1", port: int = 0,
                     heartbeat_s: float = 5.0, advertise: str | None = None, max_workers: int = 4,
                     registry_retries: int = 3, metrics_port: int | None = None,
                     metrics_host: str = "127.0.0.1", security: ClientSecurity = PLAINTEXT,
                     coordinator_token_sha256: str | None = None,
                     server_credentials: grpc.ServerCredentials | None = None) -> SiteAgentHandle:
    """Serve SiteAgent.Evaluate for a workspace (port 0: a free port) and start heartbeats.

    With `metrics_port` (0: a free port), Prometheus metrics are served on HTTP /metrics.
    `security` is how this site reaches the coordinator (token, TLS); with `coordinator_token_sha256`,
    Evaluate callers must present the token with that sha256 (UNAUTHENTICATED otherwise);
    `server_credentials` serve Evaluate over TLS.
    """
    interceptors = [RequireTokenInterceptor(coordinator_token_sha256)] if coordinator_token_sha256 else []
    registry = RegistryClient(coordinator, retries=registry_retries, backoff_s=0.2, security=security)
    try:
        evaluator = SiteEvaluator(workspace, registry)
        # no SO_REUSEPORT: a second agent on a taken port must fail, not silently share it
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="site-agent"),
                             interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        metrics = SiteMetrics(evaluator.info.site_id)
        for task, values in evaluator.info.teacher_metrics.items():
            for name, value in values.items():
                metrics.teacher_quality.labels(evaluator.info.site_id, evaluator.info.category, task, name).set(value)
        site_pb2_grpc.add_SiteAgentServicer_to_server(SiteAgentServicer(evaluator, metrics), server)
        bound = _bind(server, host, port, server_credentials)
    except BaseException:
        registry.close()
        raise
    server.start()
    served_metrics = metrics.serve(metrics_port, metrics_host) if metrics_port is not None else None
    endpoint = advertise or f"{host}:{bound}"
    heartbeat = Heartbeat(coordinator, evaluator.info.site_id, endpoint, heartbeat_s, security).start()
    log.info("site '%s' (category '%s') serving SiteAgent on %s", evaluator.info.site_id,
             evaluator.info.category, endpoint)
    return SiteAgentHandle(bound, endpoint, server, heartbeat, registry, evaluator, metrics, served_metrics)


def _bind(server: grpc.Server, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
    try:
        address = f"{host}:{port}"
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise SiteAgentError(f"cannot listen on {host}:{port}: {exc}") from None
    if not bound:
        raise SiteAgentError(f"cannot listen on {host}:{port} (in use or not a local address?)")
    return bound


__all__ = ["EvaluateError", "Heartbeat", "SiteAgentHandle", "SiteAgentServicer", "SiteEvaluator",
           "start_site_agent"]
