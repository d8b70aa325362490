"""Wires the coordinator together: store, ledger, Ray, scheduler and one gRPC server for every service."""

from __future__ import annotations

import logging
import os
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from coordinator.control_service import ControlService, HeartbeatService
from coordinator.events import EventHub
from coordinator.ledger import Ledger
from coordinator.netbook import NetBook
from coordinator.observer import CountingStore, Observer
from coordinator.registry_service import RegistryService
from coordinator.scheduler import Scheduler
from coordinator.site_client import SiteClient
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
    # Where authentication will plug in: grpc.ServerInterceptor instances, applied to every service.
    interceptors: list[grpc.ServerInterceptor] = field(default_factory=list)
    rpc_threads: int = 16
    metrics_port: int | None = None        # None: no /metrics endpoint; 0: any free port
    metrics_host: str = "127.0.0.1"
    quality_margin: float = 5.0            # points an adapter may trail its teacher before alerting


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


def start_coordinator(config: CoordinatorConfig) -> CoordinatorHandle:
    metrics = CoordinatorMetrics(quality_margin=config.quality_margin)
    store = CountingStore(open_store(config.store_url), metrics)
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    ledger = Ledger(Path(config.state_dir) / "ledger.sqlite3")
    init_ray(config.ray_address)
    events, netbook = EventHub(), NetBook(store)
    observer = Observer(metrics, ledger, store)
    events.add_listener(observer.on_event)
    scheduler = Scheduler(ledger, store, config.store_url, events, SiteClient(ledger, config.eval_timeout_s),
                          netbook, config.max_concurrent_jobs, config.max_attempts, config.progress_every)
    server = grpc.server(
        futures.ThreadPoolExecutor(config.rpc_threads, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor(metrics), *config.interceptors],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                 ("grpc.max_send_message_length", MAX_MESSAGE)])
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(
        RegistryService(store, config.limits, Path(config.state_dir) / "spool", metrics), server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(ledger, store, scheduler, events, netbook), server)
    heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(HeartbeatService(ledger), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    server.start()
    for job_id in ledger.recover(config.max_attempts):  # jobs from before a restart
        scheduler.submit(job_id)
    metrics_port = None
    if config.metrics_port is not None:
        metrics_port = metrics.serve(config.metrics_port, config.metrics_host)
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, metrics_port)
    metrics.up.set(1)
    observer.start()
    log.info("coordinator listening on %s:%d, store %s", config.host, port, config.store_url)
    return CoordinatorHandle(port, server, scheduler, ledger, metrics, observer, metrics_port)
