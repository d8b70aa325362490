"""One serving replica: the store, the net watcher, the batcher and a gRPC server with the Predict service."""
from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import grpc

from coordinator import auth
from coordinator.serving.batcher import Batcher
from coordinator.serving.images import ImageLimits
from coordinator.serving.loader import NetHolder, NetWatcher, Served
from coordinator.serving.metrics import ServingMetrics
from coordinator.serving.service import PredictService, run_batch
from coordinator.store import StoreError, open_store
from protos.nt.v1 import predict_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class ServingConfig:
    store_url: str
    net: str | None = None              # None: the net committed most recently
    host: str = "127.0.0.1"
    port: int = 50071                   # 0: any free port
    poll_s: float = 2.0                 # how often the store is asked for a newer promoted version
    max_batch: int = 32                 # images per forward pass
    max_wait_s: float = 0.005           # how long a batch waits for more requests to the same route
    limits: ImageLimits = field(default_factory=ImageLimits)
    rpc_threads: int = 64               # concurrent requests being decoded or waiting for their batch
    auth_file: Path | None = None       # the coordinator's auth file: client (and admin) tokens may call
    tls_cert: Path | None = None
    tls_key: Path | None = None
    metrics_port: int | None = None     # None: no /metrics; 0: any free port
    metrics_host: str = "127.0.0.1"


@dataclass
class ServingHandle:
    port: int
    server: grpc.Server
    watcher: NetWatcher
    batcher: Batcher
    holder: NetHolder
    metrics: ServingMetrics
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        """Stops taking calls, lets those in flight finish (within grace_s), then the batcher and watcher."""
        self.server.stop(grace_s).wait()
        self.watcher.stop()
        self.batcher.close()
        self.metrics.stop()


def start_serving(config: ServingConfig) -> ServingHandle:
    interceptors = [auth.AuthInterceptor(auth.TokenTable(config.auth_file))] if config.auth_file else []
    if not interceptors and not auth.is_loopback(config.host):
        log.warning("NO AUTHENTICATION: Predict on %s answers anybody (give --auth-file)", config.host)
    metrics, holder = ServingMetrics(), NetHolder()
    store = open_store(config.store_url)

    def swapped(served: Served, seconds: float) -> None:
        metrics.version.labels(net=served.name).set(served.version)
        metrics.swaps.inc()
        metrics.swap_seconds.observe(seconds)

    watcher = NetWatcher(store, holder, config.net, config.poll_s, on_swap=swapped,
                         on_error=lambda _: metrics.load_errors.inc())
    try:
        watcher.poll_once()  # serve at once when a net exists; otherwise UNAVAILABLE until one is promoted
    except (StoreError, ValueError) as exc:
        log.warning("no net loaded at start: %s", exc)
        metrics.load_errors.inc()
    batcher = Batcher(run_batch, config.max_batch, config.max_wait_s,
                      on_batch=lambda route, n: metrics.batch_size.labels(*cast(tuple[str, str], route)).observe(n))
    server = grpc.server(futures.ThreadPoolExecutor(config.rpc_threads, thread_name_prefix="predict"),
                         interceptors=interceptors,
                         options=[("grpc.max_receive_message_length", config.limits.max_request_bytes),
                                  ("grpc.max_send_message_length", config.limits.max_request_bytes)])
    predict_pb2_grpc.add_PredictServicer_to_server(PredictService(holder, config.limits, batcher, metrics), server)
    address = f"{config.host}:{config.port}"
    credentials = _credentials(config)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    watcher.start()
    metrics_port = metrics.serve(config.metrics_port, config.metrics_host) if config.metrics_port is not None else None
    log.info("Predict listening on %s:%d, store %s", config.host, port, config.store_url)
    return ServingHandle(port, server, watcher, batcher, holder, metrics, metrics_port)


def _credentials(config: ServingConfig) -> grpc.ServerCredentials | None:
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    return auth.server_credentials(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
