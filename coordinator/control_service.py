"""Control (admin API) and Heartbeat (site liveness) servicers."""

from __future__ import annotations

import queue
import time

import grpc

from coordinator import ledger as L
from coordinator import auth, validation
from coordinator.convert import job_pb, metrics_pb, spec_to_dict, state_event
from coordinator.events import EventHub
from coordinator.netbook import NetBook
from coordinator.scheduler import Scheduler
from coordinator.store import ObjectStore, StoreError
from coordinator.store.manifests import load_module_record
from protos.nt.v1 import control_pb2, control_pb2_grpc, heartbeat_pb2, heartbeat_pb2_grpc
from transplant.architectures import TASKS
from transplant.methods import METHODS

DATA_FREE = "back_distill"
MAX_SAMPLES = 1000


def check_spec(spec: control_pb2.TransplantJobSpec, store: ObjectStore) -> str | None:
    """The first problem with a job spec, or None."""
    if spec.method not in METHODS:
        return f"unknown method {spec.method!r}; use one of {sorted(METHODS)}"
    if spec.task not in TASKS:
        return f"unknown task {spec.task!r}; use one of {list(TASKS)}"
    if not 1 <= spec.adapter.layers <= 8:
        return f"adapter layers must be 1..8, got {spec.adapter.layers}"
    if spec.adapter.kernel_size not in (1, 3):
        return f"adapter kernel size must be 1 or 3, got {spec.adapter.kernel_size}"
    if not 1 <= spec.steps <= 100_000:
        return f"steps must be 1..100000, got {spec.steps}"
    if spec.samples > MAX_SAMPLES:
        return f"samples must be at most {MAX_SAMPLES}, got {spec.samples}"
    if spec.method != DATA_FREE and spec.samples == 0:
        return f"method {spec.method!r} needs labelled samples (samples > 0); only {DATA_FREE} is data-free"
    for what, value in (("category", spec.category), ("teacher site", spec.teacher_site_id),
                        ("generic site", spec.generic_site_id)):
        if not validation.NAME.match(value):
            return f"invalid {what} {value!r}"
    for site in {spec.teacher_site_id, spec.generic_site_id}:
        if not store.list_keys(f"modules/{site}/"):
            return f"unknown site {site!r}: it has uploaded no modules"
    return None


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, ledger: L.Ledger, store: ObjectStore, scheduler: Scheduler, events: EventHub,
                 netbook: NetBook, watch_poll_s: float = 1.0) -> None:
        self.ledger, self.store, self.scheduler = ledger, store, scheduler
        self.events, self.netbook, self.watch_poll_s = events, netbook, watch_poll_s

    def SubmitJob(self, request, context):
        try:
            problem = check_spec(request.spec, self.store)
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable, job not submitted: {exc}")
        if problem:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        row = self.ledger.create_job(spec_to_dict(request.spec))
        self.scheduler.submit(row.id)
        return control_pb2.SubmitJobReply(job=job_pb(row))

    def GetJob(self, request, context):
        return self._job(self._row(request.job_id, context))

    def ListJobs(self, request, context):
        states = tuple(control_pb2.JobState.Name(s) for s in request.states if s)
        rows = [r for r in self.ledger.list_jobs(states)
                if (not request.category or r.spec.get("category") == request.category)
                and (not request.task or r.spec.get("task") == request.task)]
        rows = rows[:request.limit] if request.limit else rows
        return control_pb2.ListJobsReply(jobs=[job_pb(r) for r in rows])

    def CancelJob(self, request, context):
        self._row(request.job_id, context)
        self.scheduler.cancel(request.job_id)
        return control_pb2.CancelJobReply(job=self._job(self._row(request.job_id, context)))

    def WatchJob(self, request, context):
        self._row(request.job_id, context)
        with self.events.subscribe(request.job_id) as inbox:  # subscribe first: no event slips between
            row = self.ledger.get_job(request.job_id)
            yield _stamped(state_event(row.id, row.state, row.error))
            while not row.terminal and context.is_active():
                try:
                    event = inbox.get(timeout=self.watch_poll_s)
                except queue.Empty:  # a terminal event can be dropped from a full inbox; the ledger knows
                    row = self.ledger.get_job(row.id)
                    if row.terminal:
                        yield _stamped(state_event(row.id, row.state, row.error))
                    continue
                yield event
                if event.state in _TERMINAL_PB:
                    return

    def GetJobHistory(self, request, context):
        row = self._row(request.job_id, context)
        events = [control_pb2.JobEvent(job_id=row.id, state=control_pb2.RUNNING, step=step, total_steps=total,
                                       loss=loss, distill_loss=distill, task_loss=task, time=at)
                  for step, total, loss, distill, task, at in self.ledger.job_progress(row.id)]
        return control_pb2.JobHistory(job_id=row.id, events=events)

    def GetNet(self, request, context):
        try:
            return self._net(request)
        except StoreError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}")

    def _net(self, request):
        net = self.netbook.load(request.version, request.name or None)
        if net is None:
            return control_pb2.GetNetReply(name=request.name or self.netbook.default_name())
        cats, tasks = net.category_modules, net.task_modules
        entries = [control_pb2.NetEntry(category=a.category, task=a.task, adapter_id=a.adapter_id,
                                        method=a.method, samples=a.samples, quality=metrics_pb(a.metrics),
                                        teacher_quality=metrics_pb(a.teacher_metrics), job_id=a.job_id,
                                        category_module_id=cats.get(a.category, ""),
                                        task_module_id=tasks.get(a.task, ""))
                   for a in sorted(net.adapters, key=lambda a: (a.category, a.task))]
        entries += [control_pb2.NetEntry(category=category, task=task, category_module_id=cats[category],
                                         task_module_id=tasks[task])
                    for category, task in native_routes(self.store, tasks) if category in cats]
        return control_pb2.GetNetReply(name=net.name, version=net.version, entries=entries, created=net.created)

    def _row(self, job_id: str, context) -> L.JobRow:
        row = self.ledger.get_job(job_id) if job_id else None
        if row is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        return row

    def _job(self, row: L.JobRow) -> control_pb2.Job:
        try:
            adapter = load_module_record(self.store, row.adapter_module_id, "coordinator") \
                if row.adapter_module_id else None
        except StoreError:  # the job's state comes from the ledger; its adapter ref can wait
            adapter = None
        return job_pb(row, adapter)


_TERMINAL_PB = {control_pb2.SUCCEEDED, control_pb2.FAILED, control_pb2.CANCELLED}


def _stamped(event: control_pb2.JobEvent) -> control_pb2.JobEvent:
    event.time = time.time()
    return event


def native_routes(store: ObjectStore, task_modules: dict[str, str]) -> list[tuple[str, str]]:
    """(category, task) pairs a task module serves without an adapter: its own category."""
    routes = []
    for task, module_id in sorted(task_modules.items()):
        record = load_module_record(store, module_id)
        if record is not None:
            routes.append((record.category, task))
    return routes


class HeartbeatService(heartbeat_pb2_grpc.HeartbeatServicer):
    def __init__(self, ledger: L.Ledger) -> None:
        self.ledger = ledger

    def Ping(self, request, context):
        if not validation.NAME.match(request.site_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid site id {request.site_id!r}")
        auth.check_site_context(context, request.site_id, "send heartbeats")
        if not request.endpoint or len(request.endpoint) > 255 or ":" not in request.endpoint:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "endpoint must be host:port")
        self.ledger.record_site(request.site_id, request.endpoint)
        return heartbeat_pb2.PingReply(ok=True, server_time=time.time())
