"""A net version as the Control API shows it: every route with its provenance, native routes included."""

from __future__ import annotations

import math

from coordinator.convert import entry_pb, metrics_pb, provenance_pb
from coordinator.promotion import TEACHER_PREFIX, primary_metric
from coordinator.store import Store
from coordinator.manifests import ModuleRecord, NetManifest, load_module_record
from protos.nt.v1 import control_pb2

NATIVE = "native"


def net_reply(store: Store, net: NetManifest) -> control_pb2.GetNetReply:
    cats, tasks = net.category_modules, net.task_modules
    entries = [entry_pb(a, cats.get(a.category, ""), tasks.get(a.task, ""))
               for a in sorted(net.adapters, key=lambda a: (a.category, a.task))]
    served = {(a.category, a.task) for a in net.adapters}
    for task, task_record in native_task_modules(store, tasks):
        category = task_record.category
        if category not in cats or (category, task) in served:
            continue
        category_record = load_module_record(store, cats[category])
        figures = metrics_pb(native_figures(task_record))  # the site's own measurement: quality = teacher's
        entries.append(control_pb2.NetEntry(
            category=category, task=task, category_module_id=cats[category], task_module_id=tasks[task],
            quality=figures, teacher_quality=figures,
            provenance=provenance_pb(native_provenance(category_record, task_record, net.created))))
    return control_pb2.GetNetReply(name=net.name, version=net.version, entries=entries, created=net.created,
                                   note=net.note)


def native_task_modules(store: Store, task_modules: dict[str, str]) -> list[tuple[str, ModuleRecord]]:
    """(task, record) of each task module; it serves its own category without an adapter."""
    found = []
    for task, module_id in sorted(task_modules.items()):
        record = load_module_record(store, module_id)
        if record is not None:
            found.append((task, record))
    return found


def native_routes(store: Store, task_modules: dict[str, str]) -> list[tuple[str, str]]:
    """(category, task) pairs a task module serves without an adapter: its own category."""
    return [(record.category, task) for task, record in native_task_modules(store, task_modules)]


def native_figures(task: ModuleRecord) -> dict[str, float]:
    """The owning site's figures of its own net, sent with the task module (`teacher_<metric>` metadata)."""
    figures = {}
    for key, text in task.metadata.items():
        if key.startswith(TEACHER_PREFIX):
            try:
                figures[key.removeprefix(TEACHER_PREFIX)] = float(text)
            except ValueError:
                continue  # free-form metadata that is no figure
    return {k: v for k, v in figures.items() if math.isfinite(v)}


def native_provenance(category: ModuleRecord | None, task: ModuleRecord, created: float) -> dict:
    """A task module on the category it was trained with: no job, no adapter; its figures are the
    owning site's own measurement at upload."""
    digests = {"category": category.sha256} if category is not None else {}
    digests["task"] = task.sha256
    figures = native_figures(task)
    metric = primary_metric(task.task, figures) if figures else ""
    value = figures.get(metric)
    return {"job_id": "", "method": NATIVE, "samples": 0, "adapter": {"layers": 0, "kernel": 0, "reorder": False},
            "steps": 0, "metric": metric, "value": value, "teacher_value": value, "sites": [task.site_id],
            "sha256": digests, "created": created}
