"""Each generic site grows its own transplant net: two families never overwrite each other's adapters."""
from __future__ import annotations

import time

from coordinator.netbook import NetBook
from coordinator.store import LocalStore
from coordinator.store.manifests import ModuleRecord
from coordinator.worker import JobPlan
from transplant.job import JobConfig


def record(site: str, role: str, category: str, task: str = "") -> ModuleRecord:
    return ModuleRecord(module_id=f"{site}-{role}-{category}{task}", site_id=site, category=category, role=role,
                        task=task, spec_json="{}", sha256="0" * 64, size_bytes=1, feature_norm_mean=1.0)


def plan(job: str, teacher: str, category: str, generic: str, generic_category: str) -> JobPlan:
    return JobPlan(job_id=job, store_url="", config=JobConfig(task="classification"), teacher_site_id=teacher,
                   category=record(teacher, "category", category),
                   teacher_task=record(teacher, "task", category, "classification"),
                   generic_task=record(generic, "task", generic_category, "classification"),
                   generic_category=record(generic, "category", generic_category))


def test_two_generic_sites_grow_two_nets(tmp_path):
    book = NetBook(LocalStore(tmp_path))
    assert book.load() is None and book.names() == []
    assert book.commit_job(plan("j1", "site-5", "5", "site-3", "3"), "a1", "1" * 64, {}, {"error_rate": 4.0}) == 1
    time.sleep(0.01)
    assert book.commit_job(plan("j2", "site-cat", "cat", "site-dog", "dog"), "a2", "2" * 64, {}, {}) == 1
    assert book.names() == ["site-3", "site-dog"]
    digits, shapes = book.load(name="site-3"), book.load(name="site-dog")
    assert [a.category for a in digits.adapters] == ["5"] and digits.task_modules["classification"] == "site-3-task-3classification"
    assert [a.category for a in shapes.adapters] == ["cat"]
    assert book.load().name == "site-dog"  # the default: the net committed last
    assert book.commit_job(plan("j3", "site-8", "8", "site-3", "3"), "a3", "3" * 64, {}, {}) == 2
    assert sorted(a.category for a in book.load(name="site-3").adapters) == ["5", "8"]
