"""Turns a job spec into concrete stored modules (a JobPlan), or a clear reason why it cannot run.

SubmitJob runs the same resolution before it accepts a job, so a job that cannot run is refused at
submit (INVALID_ARGUMENT) rather than failing in a worker; the driver resolves again when the job
starts (modules may have changed meanwhile).
"""

from __future__ import annotations

from coordinator.jobs import JobPlan
from coordinator.store import Store
from coordinator.manifests import (ModuleRecord, list_module_records, list_nets, load_latest_net,
                                         load_module_record)
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
    return JobConfig.create(task=spec.task, method=method, adapter_layers=spec.adapter.layers or 1,
                     kernel_size=spec.adapter.kernel_size or 1, reorder=spec.adapter.reorder,
                     steps=spec.steps or DEFAULT_STEPS, seed=spec.seed)


def candidates(spec: control_pb2.TransplantJobSpec) -> tuple[str, ...]:
    """The methods an auto job trains (the library's registry decides), () for one named method."""
    return auto_candidates(spec.samples, True) if spec.method in ("", AUTO) else ()


def resolve_plan(store: Store, store_url: str, job_id: str,
                 spec: control_pb2.TransplantJobSpec) -> JobPlan:
    teacher = spec.teacher_site_id
    teachers = list_module_records(store, teacher)
    _check_category(teachers, teacher, spec.category)
    category = _find(teachers, "category", spec.category, "", f"site {teacher}'s CATEGORY module for {spec.category!r}")
    teacher_task = _find(teachers, "task", spec.category, spec.task,
                         f"site {teacher}'s TASK module {spec.task!r} for {spec.category!r}")
    if spec.net:
        generic_task, generic_category = _from_net(store, spec)
        generic_tasks: dict[str, str] = {}  # step 3: the net's base is whatever it already has
    else:
        generic = spec.generic_site_id
        generics = teachers if generic == teacher else list_module_records(store, generic)
        generic_task = _find(generics, "task", None, spec.task, f"site {generic}'s TASK module {spec.task!r}")
        generic_category = _find(generics, "category", generic_task.category, "",
                                 f"site {generic}'s CATEGORY module for {generic_task.category!r}")
        _check_net_task(store, generic, generic_task)
        generic_tasks = _other_tasks(generics, generic_task.category, spec.task)
    for record in (category, generic_category):
        if record.feature_norm_mean <= 0:
            raise ResolveError(f"module {record.module_id} has no feature statistics (feature_norm_mean)")
    _check_shapes(category, generic_task)
    samples_record = _samples(teachers, teacher, spec) if spec.samples else None
    return JobPlan(job_id, store_url, job_config(spec), teacher, category, teacher_task, generic_task,
                   generic_category, samples_record, spec.samples, candidates(spec),
                   spec.max_gap if spec.HasField("max_gap") else None, net=spec.net, generic_tasks=generic_tasks,
                   teacher_tasks=_other_tasks(teachers, spec.category, spec.task))


def _other_tasks(records: list[ModuleRecord], category: str, task: str) -> dict[str, str]:
    """task -> newest task module id of `category`, for every task but `task`."""
    tasks = sorted({r.task for r in records if r.role == "task" and r.category == category and r.task != task})
    return {t: _find(records, "task", category, t, t).module_id for t in tasks}


def _from_net(store: Store, spec: control_pb2.TransplantJobSpec) -> tuple[ModuleRecord, ModuleRecord]:
    """Step 3: the task module net `spec.net` has for the task, and the category module it is native on."""
    net = load_latest_net(store, spec.net)
    if net is None:
        raise ResolveError(f"there is no transplant net {spec.net!r}; nets: {', '.join(list_nets(store)) or 'none'}")
    if spec.task not in net.task_modules:
        raise ResolveError(f"net {spec.net!r} has no {spec.task} task module; it has: "
                           f"{', '.join(sorted(net.task_modules)) or 'none'}")
    task = _stored(store, net.task_modules[spec.task])
    if spec.generic_site_id and spec.generic_site_id != task.site_id:
        raise ResolveError(f"net {spec.net!r}'s {spec.task} task module is site {task.site_id}'s, not site "
                           f"{spec.generic_site_id}'s (leave the generic site out with --net)")
    if task.category not in net.category_modules:
        raise ResolveError(f"net {spec.net!r} lacks the category module its {spec.task} task module is native on "
                           f"({task.category!r})")
    return task, _stored(store, net.category_modules[task.category])


def _stored(store: Store, module_id: str) -> ModuleRecord:
    record = load_module_record(store, module_id)
    if record is None:
        raise ResolveError(f"module {module_id} of the net is no longer in the registry")
    return record


def _check_net_task(store: Store, net_name: str, generic_task: ModuleRecord) -> None:
    """A net keeps the task module it has for a task: one another site brought (step 2) is not replaced."""
    net = load_latest_net(store, net_name)
    current = net.task_modules.get(generic_task.task) if net else None
    if current is None or current == generic_task.module_id:
        return
    record = load_module_record(store, current)
    if record is not None and record.site_id != generic_task.site_id:
        raise ResolveError(f"net {net_name!r} serves {generic_task.task} with site {record.site_id}'s task module "
                           f"({record.category!r}); to connect to it, submit with --net {net_name}")


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
