"""The net writer: each generic site grows its own net; results enter by evidence (gate + better than
the route's adapter), admins force and roll back, every route carries its provenance."""
from __future__ import annotations

import time

import pytest

from coordinator.jobs import CandidateResult, JobPlan, TrainedAdapter
from coordinator.netbook import NetBook, Proposal, proposal_for
from coordinator.promotion import best_candidate, decide, max_gap_for, primary_metric
from coordinator.store import LocalStore
from coordinator.manifests import ModuleRecord, list_net_versions, load_net
from transplant.job import JobConfig

CLS = "classification"
PROVENANCE_KEYS = {"job_id", "method", "samples", "adapter", "steps", "metric", "value", "teacher_value", "sites",
                   "sha256", "created"}


def record(site: str, role: str, category: str, task: str = "") -> ModuleRecord:
    return ModuleRecord(module_id=f"{site}-{role}-{category}{task}", site_id=site, category=category, role=role,
                        task=task, spec_json="{}", sha256=(site + role + category)[:8].ljust(64, "0"), size_bytes=1,
                        feature_norm_mean=1.0)


def plan(job: str, teacher: str, category: str, generic: str, generic_category: str, task: str = CLS) -> JobPlan:
    return JobPlan(job_id=job, store_url="", config=JobConfig.create(task=task, adapter_layers=2, kernel_size=3),
                   teacher_site_id=teacher, category=record(teacher, "category", category),
                   teacher_task=record(teacher, "task", category, task),
                   generic_task=record(generic, "task", generic_category, task),
                   generic_category=record(generic, "category", generic_category), samples=10)


def candidate(method: str, value: float, teacher: float = 5.0, metric: str = "error_rate") -> CandidateResult:
    adapter = TrainedAdapter(method, f"coordinator-adapter-{method}-{value}", f"{int(value * 100):064d}", 10,
                             '{"layers": 2}', steps=50, seconds=1.0)
    return CandidateResult(method, adapter, {metric: value, f"teacher_{metric}": teacher})


def propose(book: NetBook, job: str, value: float, gate: float = 30.0, **where) -> tuple[int, str]:
    version, decision = book.commit(proposal_for(plan(job, **where), candidate("back_distill", value), gate))
    return version, decision.reason


DIGITS = {"teacher": "site-5", "category": "5", "generic": "site-3", "generic_category": "3"}


def test_two_generic_sites_grow_two_nets(tmp_path) -> None:
    book = NetBook(LocalStore(tmp_path))
    assert book.load() is None and book.names() == []
    assert propose(book, "j1", 8.0, **DIGITS)[0] == 1
    time.sleep(0.01)
    assert propose(book, "j2", 8.0, teacher="site-cat", category="cat", generic="site-dog",
                   generic_category="dog")[0] == 1
    assert book.names() == ["site-3", "site-dog"]
    digits, shapes = book.load(name="site-3"), book.load(name="site-dog")
    assert [a.category for a in digits.adapters] == ["5"] and digits.task_modules[CLS] == "site-3-task-3classification"
    assert [a.category for a in shapes.adapters] == ["cat"]
    assert book.load().name == "site-dog"  # the default: the net committed last
    assert propose(book, "j3", 8.0, teacher="site-8", category="8", generic="site-3", generic_category="3")[0] == 2
    assert sorted(a.category for a in book.load(name="site-3").adapters) == ["5", "8"]


def test_a_route_only_gets_better(tmp_path) -> None:
    store = LocalStore(tmp_path)
    book = NetBook(store)
    assert propose(book, "far", 40.0, **DIGITS) == (0, "error_rate 40.00 vs teacher 5.00: 35.00 points behind "
                                                       "the teacher, the gate allows 30")
    assert book.load(name="site-3") is None  # rejected: no net at all
    assert propose(book, "ok", 20.0, **DIGITS)[0] == 1
    version, reason = propose(book, "worse", 25.0, **DIGITS)
    assert version == 0 and "not better than the route's current adapter (error_rate 20.00)" in reason
    version, reason = propose(book, "tie", 20.0, **DIGITS)
    assert version == 0 and "not better" in reason
    assert propose(book, "better", 12.0, **DIGITS)[0] == 2
    assert propose(book, "strict", 11.0, gate=5.0, **DIGITS)[0] == 0  # a job's own, stricter gate
    entries = [load_net(store, "site-3", v).adapter_for("5", CLS) for v in list_net_versions(store, "site-3")]
    assert [e.job_id for e in entries] == ["ok", "better"]
    assert [e.metrics["error_rate"] for e in entries] == [20.0, 12.0]  # each version no worse than the last


def test_every_route_carries_its_provenance(tmp_path) -> None:
    book = NetBook(LocalStore(tmp_path))
    the_plan = plan("j1", **DIGITS)
    version, _ = book.commit(proposal_for(the_plan, candidate("lstsq", 9.0, teacher=4.0), 30.0))
    entry = book.load(name="site-3").adapter_for("5", CLS)
    assert set(entry.provenance) == PROVENANCE_KEYS
    assert entry.provenance == {
        "job_id": "j1", "method": "lstsq", "samples": 10, "adapter": {"layers": 2, "kernel": 3, "reorder": False},
        "steps": 50, "metric": "error_rate", "value": 9.0, "teacher_value": 4.0, "sites": ["site-5", "site-3"],
        "sha256": {"category": the_plan.category.sha256, "adapter": entry.adapter_sha256,
                   "task": the_plan.generic_task.sha256},
        "created": book.load(name="site-3").created}
    assert entry.method == "lstsq" and not entry.forced


def test_forced_promotion_and_rollback(tmp_path) -> None:
    store = LocalStore(tmp_path)
    book = NetBook(store)
    assert propose(book, "good", 10.0, **DIGITS)[0] == 1
    bad = proposal_for(plan("bad", **DIGITS), candidate("direct_learn", 45.0), 30.0)
    assert book.commit(bad)[0] == 0
    version, decision = book.commit(Proposal.from_doc(bad.to_doc()), forced=True, note="job bad promoted by ops")
    assert version == 2 and decision.promote
    forced = book.load(name="site-3")
    assert forced.adapter_for("5", CLS).job_id == "bad" and forced.adapter_for("5", CLS).forced
    assert forced.note == "job bad promoted by ops"
    restored = book.rollback("site-3", 1, note="rollback to version 1 by ops")
    assert restored.version == 3 and restored.note == "rollback to version 1 by ops"
    assert restored.adapter_for("5", CLS).job_id == "good" and not restored.adapter_for("5", CLS).forced
    assert list_net_versions(store, "site-3") == [1, 2, 3]  # history is kept
    with pytest.raises(LookupError):
        book.rollback("site-3", 9, note="")
    assert book.find_commit("site-3", "bad") == 2 and book.find_commit("site-3", "good") == 3


def test_primary_metric_and_best_candidate() -> None:
    assert primary_metric("segmentation", {"pixel_accuracy": 80.0, "iou": 40.0}) == "iou"
    assert primary_metric("segmentation", {"pixel_accuracy": 80.0}) == "pixel_accuracy"
    assert primary_metric(CLS, {"error_rate": 3.0}) == "error_rate"
    seg = [candidate("a", 40.0, 60.0, "iou"), candidate("b", 55.0, 60.0, "iou"), CandidateResult("c", error="boom")]
    assert best_candidate("segmentation", seg).method == "b"  # higher IoU is better
    cls = [candidate("a", 30.0), candidate("b", 12.0), candidate("c", 12.0)]
    assert best_candidate(CLS, cls).method == "b"  # lower error is better; the earlier one wins a tie
    assert decide("segmentation", {"iou": 25.0, "teacher_iou": 60.0}, None, 40.0).promote
    assert not decide("segmentation", {"iou": 15.0, "teacher_iou": 60.0}, None, 40.0).promote
    assert "no teacher" in decide(CLS, {"error_rate": 1.0}, None, 30.0).reason
    assert max_gap_for(CLS, None, {}) == 30.0 and max_gap_for(CLS, 3.0, {CLS: 9.0}) == 3.0
    assert max_gap_for("segmentation", None, {"segmentation": 12.0}) == 12.0
