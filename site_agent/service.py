"""The SiteAgent gRPC server: Evaluate (site_agent.evaluator) behind the coordinator-token check, plus
heartbeats (site_agent.heartbeat) and Prometheus metrics, started and stopped as one handle."""
from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from common.guard import RequireTokenInterceptor
from common.security import PLAINTEXT, ClientSecurity
from protos.nt.v1 import site_pb2, site_pb2_grpc

from site_agent.client import RegistryClient
from site_agent.errors import SiteAgentError
from site_agent.evaluator import EvaluateError, SiteEvaluator
from site_agent.heartbeat import Heartbeat
from site_agent.telemetry import SiteMetrics

log = logging.getLogger("site_agent.service")


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
    Evaluate callers must present the coordinator's credential for this site with that sha256 (or one of
    several, comma-separated; UNAUTHENTICATED otherwise);
    `server_credentials` serve Evaluate over TLS.
    """
    # several comma-separated digests: any of them (old and new credential while a rotation rolls out)
    interceptors = [RequireTokenInterceptor(coordinator_token_sha256.split(","))] if coordinator_token_sha256 else []
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


__all__ = ["SiteAgentHandle", "SiteAgentServicer", "start_site_agent"]
