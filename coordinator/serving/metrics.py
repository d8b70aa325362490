"""Prometheus metrics of a serving replica (its own registry and /metrics port, like the coordinator's).

Route labels name only routes the served net has: a request for an unknown (category, task) is
counted under category="unknown", so callers cannot grow the label set without bound.
"""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
UNKNOWN = "unknown"


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter("transplant_predict_requests_total", "Predict requests by route and gRPC status code",
                                ["category", "task", "code"], registry=r)
        self.images = Counter("transplant_predict_images_total", "Images answered, by route",
                              ["category", "task"], registry=r)
        self.latency = Histogram("transplant_predict_request_seconds", "Predict latency (decode, queue, forward)",
                                 ["category", "task"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("transplant_predict_batch_images", "Images per forward pass, by route",
                                    ["category", "task"], buckets=BATCH_BUCKETS, registry=r)
        self.version = Gauge("transplant_predict_net_version", "Version of the net this replica serves", ["net"],
                             registry=r)
        self.swaps = Counter("transplant_predict_swaps_total", "Net versions swapped in", registry=r)
        self.swap_seconds = Histogram("transplant_predict_swap_seconds", "Time to load a new net version",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.load_errors = Counter("transplant_predict_load_errors_total",
                                   "Polls that failed (store down, a version that does not load)", registry=r)
        self._http: Any = None

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
