"""A site agent whose Evaluate answers with figures a test sets, for tests of what the coordinator does
with them (the gate, promotion, cancels). The real site's evaluation is tested in tests/site_agent."""
from __future__ import annotations

import threading

from coordinator.store import open_store
from coordinator.manifests import load_module_record
from protos.nt.v1 import common_pb2, site_pb2, site_pb2_grpc


class ScriptedSite(site_pb2_grpc.SiteAgentServicer):
    """Error rate per (category, method) or per method (read from the adapter's record); teacher at 5 %."""

    def __init__(self, store_url: str, site_id: str = "site-t", teacher: float = 5.0) -> None:
        self.store, self.site_id, self.teacher = open_store(store_url), site_id, teacher
        self.figures: dict = {}
        self.hold: str | tuple[str, str] | None = None  # category (or (category, method)) whose evaluations wait
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[tuple[str, str]] = []

    def value(self, category: str, method: str) -> float:
        return self.figures.get((category, method), self.figures.get(method, 20.0))

    def Evaluate(self, request, context):
        method = load_module_record(self.store, request.adapter.module_id).metadata["method"]
        self.calls.append((request.job_id, method))
        if self.hold in (request.category, (request.category, method)):
            self.entered.set()
            self.release.wait(60)
        return site_pb2.EvaluateReply(metrics=[
            common_pb2.Metric(name="error_rate", value=self.value(request.category, method)),
            common_pb2.Metric(name="teacher_error_rate", value=self.teacher)], num_samples=10, site_id=self.site_id)
