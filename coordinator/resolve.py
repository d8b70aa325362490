"""Turns a job spec into concrete stored modules (a JobPlan), or a clear reason why it cannot run.

SubmitJob runs the same resolution before it accepts a job, so a job that cannot run is refused at
submit (INVALID_ARGUMENT) rather than failing in a worker; the driver resolves again when the job
starts (modules may have changed meanwhile).
"""

from __future__ import annotations

from coordinator.jobs import JobPlan
from coordinator.store import Store
from coordinator.store.manifests import ModuleRecord, list_module_records
from protos.nt.v1 import control_pb2
from transplant.job import JobConfig
from transplant.methods import AUTO, TrainConfig, auto_candidates
from transplant.spec import ModuleSpec, SpecError, output_shape

DEFAULT_STEPS = TrainConfig().steps  # `steps: 0` in a job spec means this: the library's own default

SHAPE_FLAGS = "channels are set by `site_agent train --width`, height and width by `--size`"


class ResolveError(Exception):
    """The job's modules are not (all) in the registry, or do not fit together."""


def _newest(records: list[ModuleRecord], what: str) -> ModuleRecord:
    if not records:
        raise ResolveError(f"missing module: {what} is not in the registry")
    return max(records, key=lambda r: r.created)


def _find(records: list[ModuleRecord], role: str, category: str | None, task: str, what: str) -> ModuleRecord:
    return _newest([r for r in records if r.role == role and (category is None or r.category == category)
                    and r.task == task], what)


def job_config(spec: control_pb2.TransplantJobSpec) -> JobConfig:
    method = spec.method if spec.method not in ("", AUTO) else "back_distill"  # auto: set per candidate
    return JobConfig(task=spec.task, method=method, adapter_layers=spec.adapter.layers or 1,
                     kernel_size=spec.adapter.kernel_size or 1, reorder=spec.adapter.reorder,
                     steps=spec.steps or DEFAULT_STEPS, seed=spec.seed)


def candidates(spec: control_pb2.TransplantJobSpec) -> tuple[str, ...]:
    """The methods an auto job trains (the library's registry decides), () for one named method."""
    return auto_candidates(spec.samples, True) if spec.method in ("", AUTO) else ()


def resolve_plan(store: Store, store_url: str, job_id: str,
                 spec: control_pb2.TransplantJobSpec) -> JobPlan:
    teacher, generic = spec.teacher_site_id, spec.generic_site_id
    teachers = list_module_records(store, teacher)
    generics = teachers if generic == teacher else list_module_records(store, generic)
    _check_category(teachers, teacher, spec.category)
    category = _find(teachers, "category", spec.category, "", f"site {teacher}'s CATEGORY module for {spec.category!r}")
    teacher_task = _find(teachers, "task", spec.category, spec.task,
                         f"site {teacher}'s TASK module {spec.task!r} for {spec.category!r}")
    generic_task = _find(generics, "task", None, spec.task, f"site {generic}'s TASK module {spec.task!r}")
    generic_category = _find(generics, "category", generic_task.category, "",
                             f"site {generic}'s CATEGORY module for {generic_task.category!r}")
    for record in (category, generic_category):
        if record.feature_norm_mean <= 0:
            raise ResolveError(f"module {record.module_id} has no feature statistics (feature_norm_mean)")
    _check_shapes(category, generic_task)
    samples_record = _samples(teachers, teacher, spec) if spec.samples else None
    return JobPlan(job_id, store_url, job_config(spec), teacher, category, teacher_task, generic_task,
                   generic_category, samples_record, spec.samples, candidates(spec),
                   spec.max_gap if spec.HasField("max_gap") else None)


def _check_category(records: list[ModuleRecord], site: str, category: str) -> None:
    have = sorted({r.category for r in records if r.role == "category"})
    if category not in have:
        raise ResolveError(f"site {site} has no category module for {category!r}; "
                           f"it has: {', '.join(have) or 'none'}")


def _check_shapes(category: ModuleRecord, generic_task: ModuleRecord) -> None:
    try:
        features = list(output_shape(ModuleSpec.loads(category.spec_json)))
        reads = list(ModuleSpec.loads(generic_task.spec_json).input_shape)
    except SpecError as exc:  # validated at upload; a stored spec that no longer parses is a bug to report
        raise ResolveError(f"stored spec does not parse: {exc}") from None
    if features != reads:
        raise ResolveError(
            f"shapes do not fit: site {category.site_id}'s category module {category.category!r} outputs "
            f"{features}, site {generic_task.site_id}'s {generic_task.task} task module reads {reads} "
            f"(both sites must train with the same settings: {SHAPE_FLAGS})")


def _samples(records: list[ModuleRecord], site: str, spec: control_pb2.TransplantJobSpec) -> ModuleRecord:
    shared = [r for r in records if r.role == "samples" and r.category == spec.category]
    if not shared:
        raise ResolveError(f"the job asks for {spec.samples} labelled samples, but site {site} has not shared "
                           f"any for {spec.category!r} (site_agent run --share-samples N)")
    record = _newest(shared, "samples")
    if record.num_images < spec.samples:
        raise ResolveError(f"the job asks for {spec.samples} labelled samples, site {site} shared "
                           f"{record.num_images} for {spec.category!r}")
    return record
