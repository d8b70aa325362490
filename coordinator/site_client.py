"""Asks the owning (teacher) site to evaluate a learnt adapter on its own data; only metrics return."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc

from common.security import PLAINTEXT, ClientSecurity
from coordinator.convert import module_ref
from coordinator.ledger import Ledger
from coordinator.site_identity import EndpointError, EndpointRefused, SiteCredentials, check_endpoint
from coordinator.worker import JobPlan
from protos.nt.v1 import common_pb2, site_pb2, site_pb2_grpc

MAX_MESSAGE = 64 << 20


class EvaluationError(Exception):
    """The site could not (or would not) evaluate; the job fails with this message."""


class SiteClient:
    def __init__(self, ledger: Ledger, timeout_s: float = 120.0, security: ClientSecurity = PLAINTEXT,
                 credentials: SiteCredentials | None = None,
                 hosts: Callable[[str], tuple[str, ...]] | None = None) -> None:
        """`security`: the CA of the sites' TLS certificates; `credentials`: the coordinator's secret, from
        which each site is presented a bearer token of its own (coordinator.site_identity); `hosts`: the
        hosts a site may be at now (the auth file's), checked again before dialling what it announced."""
        self.ledger, self.timeout_s, self.security, self.credentials = ledger, timeout_s, security, credentials
        self.hosts = hosts

    def _security(self, site_id: str) -> ClientSecurity:
        if self.credentials is None:
            return self.security
        return dataclasses.replace(self.security, token=self.credentials.for_site(site_id))

    def evaluate(self, plan: JobPlan, adapter: common_pb2.ModuleRef, adapter_config_json: str) -> dict[str, float]:
        site_id = plan.teacher_site_id
        site = self.ledger.get_site(site_id)
        if site is None:
            raise EvaluationError(f"site {site_id} has never announced its endpoint (no heartbeat)")
        if self.hosts is not None:  # the allow-list may have changed since the heartbeat was taken
            try:
                check_endpoint(site_id, site.endpoint, self.hosts(site_id))
            except (EndpointError, EndpointRefused) as exc:
                raise EvaluationError(f"not dialling site {site_id}: {exc}") from None
        request = site_pb2.EvaluateRequest(
            job_id=plan.job_id, category=plan.category.category, task=plan.config.task, adapter=adapter,
            task_module=module_ref(plan.generic_task), category_module=module_ref(plan.category),
            adapter_config_json=adapter_config_json)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
        with self._security(site_id).channel(site.endpoint, options=options) as channel:
            try:
                # wait_for_ready: a site restarting within the deadline still gets the request
                reply = site_pb2_grpc.SiteAgentStub(channel).Evaluate(
                    request, timeout=self.timeout_s, wait_for_ready=True)
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise EvaluationError(f"site {site_id} refused the coordinator's credentials: "
                                          f"{exc.code().name}: {exc.details()}") from None
                if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    raise EvaluationError(f"site {site_id} did not answer evaluation within "
                                          f"{self.timeout_s:g} s") from None
                raise EvaluationError(f"site {site_id} failed the evaluation: {exc.code().name}: "
                                      f"{exc.details()}") from None
        metrics = {m.name: float(m.value) for m in reply.metrics}
        if not metrics:
            raise EvaluationError(f"site {site_id} returned no metrics")
        return metrics
