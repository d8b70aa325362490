"""The one writer of transplant-net manifests: results enter by evidence, admins promote and roll back.

A transplant net grows around one generic site's task modules, so each generic site has its own net,
named after it: category modules of different families never have to share one task module.
The gate is decided under the writer's lock against the latest version, so two results for the same
route cannot both pass against the same old adapter.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from coordinator.jobs import CandidateResult, JobPlan
from coordinator.promotion import TEACHER_PREFIX, Decision, decide, primary_metric, split_metrics
from coordinator.store import Store
from coordinator.manifests import (AdapterEntry, NetManifest, commit_net, list_nets, load_latest_net,
                                         load_net)

DEFAULT_NET = "default"
__all__ = ["DEFAULT_NET", "NetBook", "Proposal", "TEACHER_PREFIX", "proposal_for", "split_metrics"]


@dataclass
class Proposal:
    """A job's result as it would enter its net; kept in the ledger's commit claim (restart repair,
    forced promotion)."""

    net: str
    entry: AdapterEntry
    category_module_id: str
    generic_category: str
    generic_category_module_id: str
    generic_task_module_id: str
    max_gap: float
    # task -> module id for tasks the net lacks, added native on their own category: the generic
    # site's other tasks first (the net's base), then the teacher's (step 2). Never replaces one.
    extra_tasks: dict[str, str] = field(default_factory=dict)

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> Proposal:
        return cls(**{**doc, "entry": AdapterEntry(**doc["entry"])})


def proposal_for(plan: JobPlan, chosen: CandidateResult, max_gap: float) -> Proposal:
    """The chosen candidate as a net entry, with the provenance every route carries."""
    task, adapter = plan.config.task, chosen.adapter
    assert adapter is not None  # best_candidate only chooses trained candidates
    quality, teacher = split_metrics(chosen.metrics)
    metric = primary_metric(task, chosen.metrics)
    provenance = {
        "job_id": plan.job_id, "method": chosen.method, "samples": plan.samples,
        "adapter": {"layers": plan.config.adapter_layers, "kernel": plan.config.kernel_size,
                    "reorder": plan.config.reorder},
        "steps": adapter.steps, "metric": metric, "value": quality.get(metric), "teacher_value": teacher.get(metric),
        "sites": list(dict.fromkeys((plan.teacher_site_id, plan.generic_task.site_id))),
        "sha256": {"category": plan.category.sha256, "adapter": adapter.sha256, "task": plan.generic_task.sha256},
        "created": 0.0,  # set when the route enters a net
    }
    entry = AdapterEntry(category=plan.category.category, task=task, adapter_id=adapter.module_id,
                         adapter_sha256=adapter.sha256, config=_config(adapter.config_json), method=chosen.method,
                         samples=plan.samples, metrics=quality, teacher_metrics=teacher, job_id=plan.job_id,
                         provenance=provenance)
    extra = {**plan.teacher_tasks, **plan.generic_tasks}  # the generic site's win a task both have
    return Proposal(plan.net_name, entry, plan.category.module_id, plan.generic_category.category,
                    plan.generic_category.module_id, plan.generic_task.module_id, max_gap, extra)


def _config(config_json: str) -> dict:
    return json.loads(config_json)


def entry_metrics(entry: AdapterEntry) -> dict[str, float]:
    """An entry's figures in the site's form (teacher_* prefixed), as the gate reads them."""
    return {**entry.metrics, **{f"{TEACHER_PREFIX}{k}": v for k, v in entry.teacher_metrics.items()}}


def apply_proposal(net: NetManifest, proposal: Proposal, forced: bool) -> None:
    """The generic site's modules are the base (native route); the job adds its category + adapter.

    Replacing a module invalidates adapters learnt against the old one, so those are dropped.
    """
    entry = copy.deepcopy(proposal.entry)
    entry.forced = forced
    entry.provenance["created"] = net.created
    _put(net, "category_modules", proposal.generic_category, proposal.generic_category_module_id, lambda a: a.category)
    _put(net, "task_modules", entry.task, proposal.generic_task_module_id, lambda a: a.task)
    _put(net, "category_modules", entry.category, proposal.category_module_id, lambda a: a.category)
    for task, module_id in proposal.extra_tasks.items():
        net.task_modules.setdefault(task, module_id)
    net.set_adapter(entry)


def _put(net: NetManifest, table: str, name: str, module_id: str, key) -> None:
    modules = getattr(net, table)
    if modules.get(name) not in (None, module_id):
        net.adapters = [a for a in net.adapters if key(a) != name]
    modules[name] = module_id


class NetBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()  # one writer: commits are read-modify-write

    def commit(self, proposal: Proposal, forced: bool = False, note: str = "") -> tuple[int, Decision]:
        """(new version, why) if the proposal passes the gate (or is forced); (0, why not) otherwise."""
        entry = proposal.entry
        with self._lock:
            latest = load_latest_net(self.store, proposal.net)
            current = latest.adapter_for(entry.category, entry.task) if latest else None
            decision = Decision(True, "forced into the net by an admin") if forced else decide(
                entry.task, entry_metrics(entry), entry_metrics(current) if current else None, proposal.max_gap)
            if not decision.promote:
                return 0, decision
            net = latest.next_version() if latest else NetManifest(proposal.net)
            apply_proposal(net, proposal, forced)
            net.note = note or f"job {entry.job_id}"
            commit_net(self.store, net)
        return net.version, decision

    def find_commit(self, name: str, job_id: str, since: float = 0.0) -> int:
        """The version that added `job_id`'s route to net `name` (newest versions first, none older than
        `since`); 0 if none did."""
        latest = load_latest_net(self.store, name)
        if latest is None:
            return 0
        found, version = 0, latest.version
        while version >= 1:
            net = latest if version == latest.version else load_net(self.store, name, version)
            if net is None or net.created < since:
                break
            if any(a.job_id == job_id for a in net.adapters):
                found = version
            elif found:
                break  # the job's route appears in a contiguous run of versions ending at its commit
            version -= 1
        return found

    def rollback(self, name: str, version: int, note: str) -> NetManifest:
        """A new version equal to `version` of net `name` (nothing is deleted; history stays)."""
        with self._lock:
            latest = load_latest_net(self.store, name)
            old = load_net(self.store, name, version) if latest else None
            if latest is None or old is None:
                raise LookupError(f"net {name!r} has no version {version}")
            net = replace(copy.deepcopy(old), version=latest.version + 1, created=time.time(), note=note)
            commit_net(self.store, net)
        return net

    def names(self) -> list[str]:
        return list_nets(self.store)

    def default_name(self) -> str:
        """The net committed most recently (the only one, in a single-family deployment)."""
        latest = [net for net in (load_latest_net(self.store, n) for n in self.names()) if net is not None]
        return max(latest, key=lambda net: net.created).name if latest else DEFAULT_NET

    def load(self, version: int = 0, name: str | None = None) -> NetManifest | None:
        name = name or self.default_name()
        return load_net(self.store, name, version) if version else load_latest_net(self.store, name)
