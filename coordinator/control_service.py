"""Control (admin API) and Heartbeat (site liveness) servicers.

Errors are raised as plain exceptions and mapped to gRPC codes by `rpc_errors.grpc_errors`.
"""

from __future__ import annotations

import math
import queue
import time

import grpc

from common.patterns import NAME_RULE
from coordinator import auth, validation
from coordinator import ledger as L
from coordinator.convert import job_pb, spec_to_dict, state_event
from coordinator.events import EventHub
from coordinator.job_states import STATES, TERMINAL_PB, state_name
from coordinator.admin.net_view import native_routes, net_reply  # noqa: F401 (native_routes: re-exported)
from coordinator.netbook import NetBook, Proposal
from coordinator.resolve import resolve_plan
from coordinator.rpc_errors import Conflict, InvalidRequest, NotFound, grpc_errors
from coordinator.scheduler import Scheduler
from coordinator.site_identity import EndpointError, EndpointRefused, check_endpoint
from coordinator.tokens import TokenTable
from coordinator.admin.sites_view import site_infos
from coordinator.store import Store, StoreError
from coordinator.manifests import load_module_record
from protos.nt.v1 import control_pb2, control_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc
from transplant.adapter import AdapterConfig, AdapterConfigError
from transplant.architectures import TASKS
from transplant.methods import AUTO, METHODS, auto_candidates

MAX_SAMPLES = 1000
MAX_STEPS = 100_000


def check_spec(spec: control_pb2.TransplantJobSpec, store: Store) -> str | None:
    """The first problem with a job spec that needs no module to find, or None."""
    if spec.method not in ("", AUTO, *METHODS):
        return f"unknown method {spec.method!r}; use {AUTO} or one of {sorted(METHODS)}"
    if spec.task not in TASKS:
        return f"unknown task {spec.task!r}; use one of {list(TASKS)}"
    try:
        AdapterConfig(channels=1, layers=spec.adapter.layers or 1, kernel_size=spec.adapter.kernel_size or 1)
    except AdapterConfigError as exc:
        return f"adapter: {exc}"
    if spec.steps > MAX_STEPS:
        return f"steps must be 0 (the default) to {MAX_STEPS}, got {spec.steps}"
    if spec.samples > MAX_SAMPLES:
        return f"samples must be at most {MAX_SAMPLES}, got {spec.samples}"
    if spec.method in METHODS and METHODS[spec.method].needs_samples and spec.samples == 0:
        data_free = [m for m, cls in sorted(METHODS.items()) if not cls.needs_samples]
        return f"method {spec.method!r} needs labelled samples (samples > 0); data-free: {', '.join(data_free)}"
    if spec.method in ("", AUTO) and not auto_candidates(spec.samples, True):
        return f"no candidate method can run with {spec.samples} samples"
    if spec.HasField("max_gap") and not (math.isfinite(spec.max_gap) and 0 <= spec.max_gap <= 100):
        return f"max_gap must be 0..100 points, got {spec.max_gap}"
    names = [("category", spec.category), ("teacher site", spec.teacher_site_id)]
    # with a net named, the task module is the net's own (step 3): the generic site is optional
    names += [("net", spec.net)] if spec.net else []
    names += [("generic site", spec.generic_site_id)] if spec.generic_site_id or not spec.net else []
    for what, value in names:
        if not validation.NAME.match(value):
            return f"invalid {what} {value!r}"
    for site in dict.fromkeys(s for s in (spec.teacher_site_id, spec.generic_site_id) if s):
        if not store.list_keys(f"modules/{site}/"):
            return f"unknown site {site!r}: it has uploaded no modules"
    return None


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, ledger: L.Ledger, store: Store, scheduler: Scheduler, events: EventHub,
                 netbook: NetBook, watch_poll_s: float = 1.0) -> None:
        self.ledger, self.store, self.scheduler = ledger, store, scheduler
        self.events, self.netbook, self.watch_poll_s = events, netbook, watch_poll_s

    @grpc_errors
    def SubmitJob(self, request, context):
        problem = check_spec(request.spec, self.store)
        if problem:
            raise InvalidRequest(problem)
        resolve_plan(self.store, "", "", request.spec)  # refuses (ResolveError) a job that cannot run
        row = self.ledger.create_job(spec_to_dict(request.spec))
        self.scheduler.submit(row.id)
        return control_pb2.SubmitJobReply(job=job_pb(row))

    @grpc_errors
    def GetJob(self, request, context):
        return self._job(self._row(request.job_id))

    @grpc_errors
    def ListJobs(self, request, context):
        unknown = sorted({s for s in request.states if s not in control_pb2.JobState.values()})
        if unknown:
            raise InvalidRequest(f"unknown job state value(s) {unknown}: the states are {', '.join(STATES)}")
        states = tuple(state_name(s) for s in request.states if s)
        rows = [r for r in self.ledger.list_jobs(states)
                if (not request.category or r.spec.get("category") == request.category)
                and (not request.task or r.spec.get("task") == request.task)]
        rows = rows[:request.limit] if request.limit else rows
        return control_pb2.ListJobsReply(jobs=[job_pb(r) for r in rows])

    @grpc_errors
    def CancelJob(self, request, context):
        self._row(request.job_id)
        self.scheduler.cancel(request.job_id)  # refused once terminal or committing: the reply says which
        return control_pb2.CancelJobReply(job=self._job(self._row(request.job_id)))

    def WatchJob(self, request, context):
        if self.ledger.get_job(request.job_id) is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
        with self.events.subscribe(request.job_id) as inbox:  # subscribe first: no event slips between
            row = self.ledger.get_job(request.job_id)
            yield _stamped(state_event(row.id, row.state, row.error or row.reason))
            while not row.terminal and context.is_active():
                try:
                    event = inbox.get(timeout=self.watch_poll_s)
                except queue.Empty:  # a terminal event can be dropped from a full inbox; the ledger knows
                    row = self.ledger.get_job(row.id)
                    if row.terminal:
                        yield _stamped(state_event(row.id, row.state, row.error or row.reason))
                    continue
                yield event
                if event.state in TERMINAL_PB:
                    return

    @grpc_errors
    def GetJobHistory(self, request, context):
        row = self._row(request.job_id)
        events = [control_pb2.JobEvent(job_id=row.id, state=control_pb2.RUNNING, step=step, total_steps=total,
                                       loss=loss, distill_loss=distill, task_loss=task, time=at, method=method)
                  for step, total, loss, distill, task, at, method in self.ledger.job_progress(row.id)]
        return control_pb2.JobHistory(job_id=row.id, events=events)

    @grpc_errors
    def GetNet(self, request, context):
        _check_net_name(request.name)
        net = self.netbook.load(request.version, request.name or None)
        if net is None:
            if request.version:
                raise NotFound(f"net {request.name or self.netbook.default_name()!r} has no version {request.version}")
            return control_pb2.GetNetReply(name=request.name or self.netbook.default_name())
        return net_reply(self.store, net)

    @grpc_errors
    def PromoteJob(self, request, context):
        row = self._row(request.job_id)
        if row.state not in (L.SUCCEEDED, L.REJECTED) or not row.commit_claim:
            raise Conflict(f"job {row.id} is {row.state}: only an evaluated job (SUCCEEDED or REJECTED) "
                           "can be promoted")
        proposal = Proposal.from_doc(row.commit_claim["proposal"])
        who = _caller()
        version, _ = self.netbook.commit(proposal, forced=True, note=f"job {row.id} promoted by {who} (forced)")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self.ledger.record_promotion(row.id, version, f"forced into net {proposal.net} v{version} by {who} "
                                                      f"at {stamp} UTC")
        return control_pb2.PromoteJobReply(job=self._job(self._row(row.id)), net_version=version)

    @grpc_errors
    def RollbackNet(self, request, context):
        if not request.name or not request.version:
            raise InvalidRequest("rollback needs a net name and the version to restore")
        _check_net_name(request.name)
        net = self.netbook.rollback(request.name, request.version,
                                    note=f"rollback to version {request.version} by {_caller()}")
        return net_reply(self.store, net)

    @grpc_errors
    def ListSites(self, request, context):
        return control_pb2.ListSitesReply(sites=site_infos(self.ledger, self.store))

    def _row(self, job_id: str) -> L.JobRow:
        row = self.ledger.get_job(job_id) if job_id else None
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return row

    def _job(self, row: L.JobRow) -> control_pb2.Job:
        try:
            adapter = load_module_record(self.store, row.adapter_module_id, "coordinator") \
                if row.adapter_module_id else None
        except StoreError:  # the job's state comes from the ledger; its adapter ref can wait
            adapter = None
        return job_pb(row, adapter)


def _check_net_name(name: str) -> None:
    """A net name names store keys: malformed ones are the caller's mistake (INVALID_ARGUMENT), not ours."""
    if name and not validation.NAME.match(name):
        raise InvalidRequest(f"invalid net name {name!r}: {NAME_RULE}")


def _caller() -> str:
    caller = auth.current_caller()
    return caller.name if caller is not None else "an admin (no authentication)"


def _stamped(event: control_pb2.JobEvent) -> control_pb2.JobEvent:
    event.time = time.time()
    return event


class HeartbeatService(heartbeat_pb2_grpc.HeartbeatServicer):
    def __init__(self, ledger: L.Ledger, tokens: TokenTable | None = None) -> None:
        """`tokens`: the auth file, whose site entries name the hosts each site may announce (None: no auth)."""
        self.ledger, self.tokens = ledger, tokens

    def Ping(self, request, context):
        if not validation.NAME.match(request.site_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid site id {request.site_id!r}")
        auth.check_site_context(context, request.site_id, "send heartbeats")
        hosts = None if self.tokens is None else self.tokens.hosts(request.site_id)
        try:
            check_endpoint(request.site_id, request.endpoint, hosts)
        except EndpointError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except EndpointRefused as exc:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        self.ledger.record_site(request.site_id, request.endpoint)
        return heartbeat_pb2.PingReply(ok=True, server_time=time.time())
