"""Wires the coordinator together: store, ledger, Ray, scheduler and one gRPC server for every service."""

from __future__ import annotations

import logging
import os
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from coordinator import auth
from coordinator.control_service import ControlService, HeartbeatService
from coordinator.events import EventHub
from coordinator.ledger import Ledger
from coordinator.netbook import NetBook
from coordinator.observer import CountingStore, Observer
from coordinator.promotion import DEFAULT_MAX_GAP
from coordinator.registry_service import RegistryService
from coordinator.streams import StreamLimits
from coordinator.scheduler import Scheduler
from coordinator.site_client import SiteClient
from coordinator.site_identity import SiteCredentials
from coordinator.store import open_store
from coordinator.telemetry import CoordinatorMetrics, MetricsInterceptor
from coordinator.validation import UploadLimits
from protos.nt.v1 import control_pb2_grpc, heartbeat_pb2_grpc, registry_pb2_grpc

log = logging.getLogger(__name__)
MAX_MESSAGE = 64 << 20  # chunks are <= 3 MiB; headers carry spec JSON, so leave generous room


@dataclass
class CoordinatorConfig:
    store_url: str
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051                      # 0: pick a free port (tests)
    ray_address: str | None = None         # None: a local Ray; "auto" or HOST:PORT: a cluster
    max_concurrent_jobs: int = 2
    eval_timeout_s: float = 120.0
    max_attempts: int = 3
    progress_every: int = 10
    limits: UploadLimits = field(default_factory=UploadLimits)
    # Extra grpc.ServerInterceptor instances, applied to every service after metrics and authentication.
    interceptors: list[grpc.ServerInterceptor] = field(default_factory=list)
    # Security (all optional; without them: plaintext and no authentication, fine on loopback only).
    auth_file: Path | None = None              # tokens (sha256) of admins and sites; re-read when it changes
    coordinator_token_file: Path | None = None # secret from which each site's Evaluate credential is derived
    tls_cert: Path | None = None               # server certificate (PEM) ...
    tls_key: Path | None = None                # ... and its private key: TLS
    tls_client_ca: Path | None = None          # with it, mutual TLS: clients need a certificate it signed
    tls_ca: Path | None = None                 # CA that signed the sites' certificates: TLS to sites
    rpc_threads: int = 16                  # gRPC handler threads (streams.StreamLimits keeps one site to a few)
    streams: StreamLimits = field(default_factory=StreamLimits)
    metrics_port: int | None = None        # None: no /metrics endpoint; 0: any free port
    metrics_host: str = "127.0.0.1"
    quality_margin: float = 5.0            # points an adapter may trail its teacher before alerting
    # task -> points a result may trail its teacher and still enter the net (promotion.DEFAULT_MAX_GAP
    # for tasks not named here); a job's own max_gap wins
    max_gaps: dict[str, float] = field(default_factory=dict)


@dataclass
class CoordinatorHandle:
    port: int
    server: grpc.Server
    scheduler: Scheduler
    ledger: Ledger
    metrics: CoordinatorMetrics
    observer: Observer
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        """Stops accepting RPCs, stops job drivers (cut-off jobs resume on restart), closes the ledger."""
        self.server.stop(grace_s).wait()
        self.scheduler.shutdown()
        self.observer.stop()
        self.metrics.up.set(0)
        self.metrics.stop()
        self.ledger.close()


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return  # e.g. the test suite's session-wide Ray
    threads = os.environ.get("TRANSPLANT_THREADS", "1")
    ray.init(address=address, include_dashboard=False, log_to_driver=True,
             runtime_env={"env_vars": {"TRANSPLANT_THREADS": threads}})


def _persist_progress(ledger: Ledger, event) -> None:
    """Progress events also go to the ledger: loss curves for reports outlive the watchers."""
    if event.total_steps:
        ledger.record_progress(event.job_id, event.step, event.total_steps, event.loss, event.distill_loss,
                               event.task_loss, event.time, event.method)


def start_coordinator(config: CoordinatorConfig) -> CoordinatorHandle:
    security = _security(config)  # first: a bad auth file or token file stops us before anything starts
    site_security = auth.ClientSecurity.from_files(None, config.tls_ca)
    # the coordinator's secret: each site is shown a credential derived for it alone (site_identity)
    site_credentials = SiteCredentials(config.coordinator_token_file) if config.coordinator_token_file else None
    credentials = _server_credentials(config)
    metrics = CoordinatorMetrics(quality_margin=config.quality_margin)
    metrics.record_gates({**DEFAULT_MAX_GAP, **config.max_gaps})
    store = CountingStore(open_store(config.store_url), metrics)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    ledger = Ledger(Path(config.state_dir) / "ledger.sqlite3")
    init_ray(config.ray_address)
    events, netbook = EventHub(), NetBook(store)
    tokens = next((i.tokens for i in security if isinstance(i, auth.AuthInterceptor)), None)
    observer = Observer(metrics, ledger, store)
    events.add_listener(observer.on_event)
    events.add_listener(lambda e: _persist_progress(ledger, e))
    scheduler = Scheduler(ledger, store, config.store_url, events,
                          SiteClient(ledger, config.eval_timeout_s, site_security, site_credentials,
                                     tokens.hosts if tokens is not None else None),
                          netbook, config.max_concurrent_jobs, config.max_attempts, config.progress_every,
                          config.max_gaps)
    server = grpc.server(
        futures.ThreadPoolExecutor(config.rpc_threads, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor(metrics), *security, *config.interceptors],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(
        RegistryService(store, config.limits, Path(config.state_dir) / "spool", metrics, config.streams), server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(ledger, store, scheduler, events, netbook), server)
    heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(HeartbeatService(ledger, tokens), server)
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    server.start()
    scheduler.committer.repair()  # before recovery: finish commits a crash cut off; none runs twice
    for job_id in ledger.recover(config.max_attempts):  # jobs from before a restart
        scheduler.submit(job_id)
    metrics_port = None
    if config.metrics_port is not None:
        metrics_port = metrics.serve(config.metrics_port, config.metrics_host)
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, metrics_port)
    metrics.up.set(1)
    observer.start()
    log.info("coordinator listening on %s:%d (%s), store %s", config.host, port,
             "mutual TLS" if config.tls_client_ca else "TLS" if config.tls_cert else "plaintext", config.store_url)
    return CoordinatorHandle(port, server, scheduler, ledger, metrics, observer, metrics_port)


def _server_credentials(config: CoordinatorConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        return auth.server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    if config.tls_client_ca:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    return None


def _security(config: CoordinatorConfig) -> list[grpc.ServerInterceptor]:
    """The authentication interceptor, or none (with a loud warning off loopback)."""
    if config.auth_file is not None:
        return [auth.AuthInterceptor(auth.TokenTable(config.auth_file))]
    if not auth.is_loopback(config.host):
        log.warning("!" * 78)
        log.warning("NO AUTHENTICATION: the coordinator listens on %s without --auth-file; anybody who can "
                    "reach it may upload, delete, submit and read everything", config.host)
        log.warning("!" * 78)
    return []
