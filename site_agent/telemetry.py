"""Prometheus metrics of a site agent, served on its own HTTP /metrics port."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class SiteMetrics:
    def __init__(self, site_id: str, registry: CollectorRegistry | None = None):
        self.site_id = site_id
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluations = Counter("transplant_site_evaluations_total", "Evaluation requests by result",
                                   ["site", "result"], registry=r)
        self.evaluation_seconds = Histogram("transplant_site_evaluation_seconds", "Time to evaluate a candidate",
                                            ["site"], registry=r)
        self.teacher_quality = Gauge("transplant_site_teacher_quality", "The site's own teacher on its test set",
                                     ["site", "category", "task", "metric"], registry=r)
        self.up = Gauge("transplant_site_up", "1 while the site agent serves", ["site"], registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        self.up.labels(self.site_id).set(1)
        return server.server_port

    def stop(self) -> None:
        server = getattr(self, "_http", None)
        if server is not None:
            server.shutdown()
            server.server_close()
