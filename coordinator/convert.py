"""Conversions between store records / ledger rows and protobuf messages (one place, both ways)."""

from __future__ import annotations

from google.protobuf import json_format

from coordinator.jobs import CandidateResult
from coordinator.ledger import JobRow
from coordinator.manifests import AdapterEntry, ModuleRecord
from protos.nt.v1 import common_pb2, control_pb2, registry_pb2

from common.patterns import PB_TO_ROLE as _PB_TO_ROLE, ROLE_TO_PB as _ROLE_TO_PB  # re-exported


def role_name(role: common_pb2.ModuleRole) -> str:
    """'' for MODULE_ROLE_UNSPECIFIED or unknown values."""
    return _PB_TO_ROLE.get(role, "")


def role_value(role: str) -> common_pb2.ModuleRole:
    return _ROLE_TO_PB[role]


def module_info(record: ModuleRecord) -> registry_pb2.ModuleInfo:
    return registry_pb2.ModuleInfo(
        module_id=record.module_id, spec_json=record.spec_json, sha256=record.sha256,
        size_bytes=record.size_bytes, site_id=record.site_id, category=record.category,
        role=role_value(record.role), task=record.task,
        stats=common_pb2.FeatureStats(feature_norm_mean=record.feature_norm_mean,
                                      num_images=record.num_images),
        metadata=record.metadata, created=record.created)


def module_ref(record: ModuleRecord) -> common_pb2.ModuleRef:
    return common_pb2.ModuleRef(module_id=record.module_id, sha256=record.sha256,
                                size_bytes=record.size_bytes)


def metrics_pb(metrics: dict[str, float]) -> list[common_pb2.Metric]:
    return [common_pb2.Metric(name=k, value=float(v)) for k, v in sorted(metrics.items())]


def spec_to_dict(spec: control_pb2.TransplantJobSpec) -> dict:
    return json_format.MessageToDict(spec, preserving_proto_field_name=True)


def spec_from_dict(doc: dict) -> control_pb2.TransplantJobSpec:
    return json_format.ParseDict(doc, control_pb2.TransplantJobSpec())


def job_pb(row: JobRow, adapter: ModuleRecord | None = None) -> control_pb2.Job:
    job = control_pb2.Job(
        job_id=row.id, spec=spec_from_dict(row.spec), state=control_pb2.JobState.Value(row.state),
        error=row.error, created=row.created, started=row.started, finished=row.finished,
        metrics=metrics_pb(row.metrics), attempts=row.attempts, net_version=row.net_version,
        candidates=[candidate_pb(CandidateResult.from_doc(c)) for c in row.candidates], reason=row.reason,
        promoted=row.promoted)
    if adapter is not None:
        job.adapter_ref.CopyFrom(module_ref(adapter))
    elif row.adapter_module_id:
        job.adapter_ref.module_id = row.adapter_module_id
    return job


def state_event(job_id: str, state: str, message: str = "") -> control_pb2.JobEvent:
    return control_pb2.JobEvent(job_id=job_id, state=control_pb2.JobState.Value(state), message=message)


def candidate_pb(candidate: CandidateResult) -> control_pb2.Candidate:
    message = control_pb2.Candidate(method=candidate.method, metrics=metrics_pb(candidate.metrics),
                                    error=candidate.error, chosen=candidate.chosen)
    if candidate.adapter is not None:
        adapter = candidate.adapter
        message.adapter_ref.CopyFrom(common_pb2.ModuleRef(module_id=adapter.module_id, sha256=adapter.sha256,
                                                          size_bytes=adapter.size_bytes))
        message.steps, message.seconds = adapter.steps, adapter.seconds
    return message


def provenance_pb(doc: dict) -> control_pb2.Provenance:
    """The provenance dict of a net entry (see AdapterEntry.provenance) as a message."""
    adapter = doc.get("adapter") or {}
    message = control_pb2.Provenance(
        job_id=doc.get("job_id", ""), method=doc.get("method", ""), samples=int(doc.get("samples", 0)),
        adapter=control_pb2.AdapterConfig(layers=int(adapter.get("layers", 0)), kernel_size=int(adapter.get("kernel", 0)),
                                          reorder=bool(adapter.get("reorder", False))),
        steps=int(doc.get("steps", 0)), metric=doc.get("metric", ""), sites=list(doc.get("sites", [])),
        sha256=dict(doc.get("sha256", {})), created=float(doc.get("created", 0.0)))
    for key in ("value", "teacher_value"):
        if doc.get(key) is not None:
            setattr(message, key, float(doc[key]))
    return message


def provenance_doc(message: control_pb2.Provenance) -> dict:
    """Back to the dict written into net.json: exactly the keys every route carries."""
    return {"job_id": message.job_id, "method": message.method, "samples": message.samples,
            "adapter": {"layers": message.adapter.layers, "kernel": message.adapter.kernel_size,
                        "reorder": message.adapter.reorder},
            "steps": message.steps, "metric": message.metric,
            "value": message.value if message.HasField("value") else None,
            "teacher_value": message.teacher_value if message.HasField("teacher_value") else None,
            "sites": list(message.sites), "sha256": dict(sorted(message.sha256.items())), "created": message.created}


def entry_pb(entry: AdapterEntry, category_module_id: str, task_module_id: str) -> control_pb2.NetEntry:
    return control_pb2.NetEntry(
        category=entry.category, task=entry.task, adapter_id=entry.adapter_id, method=entry.method,
        samples=entry.samples, quality=metrics_pb(entry.metrics), teacher_quality=metrics_pb(entry.teacher_metrics),
        job_id=entry.job_id, category_module_id=category_module_id, task_module_id=task_module_id,
        provenance=provenance_pb(entry.provenance), forced=entry.forced)
