"""The one writer of transplant-net manifests: a succeeded job adds (or replaces) its adapter.

A transplant net grows around one generic site's task modules, so each generic site has its own net,
named after it: category modules of different families never have to share one task module.
"""

from __future__ import annotations

import threading

from coordinator.store import ObjectStore
from coordinator.store.manifests import (AdapterEntry, NetManifest, commit_net, list_nets, load_latest_net,
                                         load_net)
from coordinator.worker import JobPlan

DEFAULT_NET = "default"
TEACHER_PREFIX = "teacher_"


def split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(transplanted net's metrics, teacher's metrics without the `teacher_` prefix)."""
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in metrics.items() if k.startswith(TEACHER_PREFIX)}
    return {k: v for k, v in metrics.items() if not k.startswith(TEACHER_PREFIX)}, teacher


def apply_job(net: NetManifest, plan: JobPlan, entry: AdapterEntry) -> None:
    """The generic site's modules are the base (native route); the job adds its category + adapter.

    Replacing a module invalidates adapters learnt against the old one, so those are dropped.
    """
    generic_cat = plan.generic_category
    _put(net, "category_modules", generic_cat.category, generic_cat.module_id, lambda a: a.category)
    _put(net, "task_modules", plan.generic_task.task, plan.generic_task.module_id, lambda a: a.task)
    _put(net, "category_modules", entry.category, plan.category.module_id, lambda a: a.category)
    net.set_adapter(entry)


def _put(net: NetManifest, table: str, name: str, module_id: str, key) -> None:
    modules = getattr(net, table)
    if modules.get(name) not in (None, module_id):
        net.adapters = [a for a in net.adapters if key(a) != name]
    modules[name] = module_id


def net_name(plan: JobPlan) -> str:
    return plan.generic_task.site_id


class NetBook:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._lock = threading.Lock()  # one writer: commits are read-modify-write

    def commit_job(self, plan: JobPlan, adapter_id: str, adapter_sha256: str, config: dict,
                   metrics: dict[str, float]) -> int:
        quality, teacher = split_metrics(metrics)
        entry = AdapterEntry(category=plan.category.category, task=plan.config.task, adapter_id=adapter_id,
                             adapter_sha256=adapter_sha256, config=config, method=plan.config.method,
                             samples=plan.samples, metrics=quality, teacher_metrics=teacher, job_id=plan.job_id)
        name = net_name(plan)
        with self._lock:
            latest = load_latest_net(self.store, name)
            net = latest.next_version() if latest else NetManifest(name)
            apply_job(net, plan, entry)
            commit_net(self.store, net)
        return net.version

    def names(self) -> list[str]:
        return list_nets(self.store)

    def default_name(self) -> str:
        """The net committed most recently (the only one, in a single-family deployment)."""
        latest = [net for net in (load_latest_net(self.store, n) for n in self.names()) if net is not None]
        return max(latest, key=lambda net: net.created).name if latest else DEFAULT_NET

    def load(self, version: int = 0, name: str | None = None) -> NetManifest | None:
        name = name or self.default_name()
        return load_net(self.store, name, version) if version else load_latest_net(self.store, name)
