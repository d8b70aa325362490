"""Turns a job spec into concrete stored modules (a JobPlan), or a clear reason why it cannot run."""

from __future__ import annotations

from coordinator.store import ObjectStore
from coordinator.store.manifests import ModuleRecord, list_module_records
from coordinator.worker import JobPlan
from protos.nt.v1 import control_pb2
from transplant.job import JobConfig

DEFAULT_STEPS = JobConfig.__dataclass_fields__["steps"].default


class ResolveError(Exception):
    """The job's modules are not (all) in the registry; the job fails with this message."""


def _newest(records: list[ModuleRecord], what: str) -> ModuleRecord:
    if not records:
        raise ResolveError(f"missing module: {what} is not in the registry")
    return max(records, key=lambda r: r.created)


def _find(store: ObjectStore, site: str, role: str, category: str | None, task: str, what: str) -> ModuleRecord:
    records = [r for r in list_module_records(store, site, role)
               if (category is None or r.category == category) and r.task == task]
    return _newest(records, what)


def job_config(spec: control_pb2.TransplantJobSpec) -> JobConfig:
    return JobConfig(task=spec.task, method=spec.method, adapter_layers=spec.adapter.layers or 1,
                     kernel_size=spec.adapter.kernel_size or 1, reorder=spec.adapter.reorder,
                     steps=spec.steps or DEFAULT_STEPS, seed=spec.seed)


def resolve_plan(store: ObjectStore, store_url: str, job_id: str,
                 spec: control_pb2.TransplantJobSpec) -> JobPlan:
    teacher, generic = spec.teacher_site_id, spec.generic_site_id
    category = _find(store, teacher, "category", spec.category, "",
                     f"site {teacher}'s CATEGORY module for {spec.category!r}")
    teacher_task = _find(store, teacher, "task", spec.category, spec.task,
                         f"site {teacher}'s TASK module {spec.task!r} for {spec.category!r}")
    generic_task = _find(store, generic, "task", None, spec.task, f"site {generic}'s TASK module {spec.task!r}")
    generic_category = _find(store, generic, "category", generic_task.category, "",
                             f"site {generic}'s CATEGORY module for {generic_task.category!r}")
    for record in (category, generic_category):
        if record.feature_norm_mean <= 0:
            raise ResolveError(f"module {record.module_id} has no feature statistics (feature_norm_mean)")
    samples_record = None
    if spec.samples:
        samples_record = _newest([r for r in list_module_records(store, teacher, "samples")
                                  if r.category == spec.category],
                                 f"site {teacher}'s SAMPLES for {spec.category!r} (the site has not opted in)")
        if samples_record.num_images < spec.samples:
            raise ResolveError(f"the job needs {spec.samples} samples, site {teacher} provided "
                               f"{samples_record.num_images}")
    return JobPlan(job_id, store_url, job_config(spec), teacher, category, teacher_task, generic_task,
                   generic_category, samples_record, spec.samples)
