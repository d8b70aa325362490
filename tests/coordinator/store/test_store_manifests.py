"""Module records and the versioned transplant-net manifest, on both backends."""

from __future__ import annotations

import pytest

from coordinator.store import ObjectStore
from coordinator.manifests import (
    AdapterEntry,
    ModuleRecord,
    NetConflictError,
    NetManifest,
    commit_net,
    delete_module_record,
    list_module_records,
    list_net_versions,
    load_latest_net,
    load_module_record,
    load_net,
    net_version_key,
    save_module_record,
)


def record(module_id: str, site_id: str, role: str = "category", task: str = "") -> ModuleRecord:
    return ModuleRecord(
        module_id=module_id, site_id=site_id, category="cat", role=role, task=task,
        spec_json='{"layers": []}', sha256="ab" * 32, size_bytes=10,
        feature_norm_mean=3.5, num_images=40, created=1.0,
    )


def test_module_records(store: ObjectStore) -> None:
    records = [record("m1", "a"), record("m2", "a", "task", "classification"), record("m3", "b")]
    for r in records:
        save_module_record(store, r)
    assert load_module_record(store, "m2", site_id="a") == records[1]
    assert load_module_record(store, "m3") == records[2]  # found without the site
    assert load_module_record(store, "nope") is None
    assert list_module_records(store) == records
    assert list_module_records(store, site_id="a") == records[:2]
    assert list_module_records(store, role="category") == [records[0], records[2]]
    delete_module_record(store, "a", "m1")
    assert [r.module_id for r in list_module_records(store)] == ["m2", "m3"]


def test_module_record_rejects_unknown_role() -> None:
    with pytest.raises(ValueError):
        record("m", "a", role="teacher")


def adapter(category: str, accuracy: float) -> AdapterEntry:
    return AdapterEntry(
        category=category, task="classification", adapter_id=f"ad-{category}",
        adapter_sha256="cd" * 32, config={"layers": 2, "kernel_size": 3, "reorder": False},
        samples=20, metrics={"accuracy": accuracy}, teacher_metrics={"accuracy": 0.9}, job_id="j1",
    )


def test_net_versions(store: ObjectStore) -> None:
    assert load_latest_net(store, "main") is None and list_net_versions(store, "main") == []
    first = NetManifest(name="main", category_modules={"cat": "m1"},
                        task_modules={"classification": "m2"})
    first.set_adapter(adapter("cat", 0.5))
    commit_net(store, first)

    second = load_latest_net(store, "main").next_version()
    second.set_adapter(adapter("cat", 0.8))  # replaces the cat x classification adapter
    second.set_adapter(adapter("dog", 0.7))
    commit_net(store, second)

    latest = load_latest_net(store, "main")
    assert latest == second and latest.version == 2
    assert latest.adapter_for("cat", "classification").metrics == {"accuracy": 0.8}
    assert len(latest.adapters) == 2
    assert load_net(store, "main", 1) == first
    assert list_net_versions(store, "main") == [1, 2]


def test_stale_commit_conflicts(store: ObjectStore) -> None:
    commit_net(store, NetManifest(name="main"))
    base = load_latest_net(store, "main")
    commit_net(store, base.next_version())
    with pytest.raises(NetConflictError):
        commit_net(store, base.next_version())  # someone else already made version 2
    with pytest.raises(NetConflictError):
        commit_net(store, NetManifest(name="main", version=7))


def test_crash_between_version_and_latest_keeps_old_latest(store: ObjectStore) -> None:
    commit_net(store, NetManifest(name="main", category_modules={"cat": "m1"}))
    orphan = load_latest_net(store, "main").next_version()
    orphan.category_modules["dog"] = "m9"
    store.put_json(net_version_key("main", 2), orphan.to_doc())  # "crash" before LATEST

    assert load_latest_net(store, "main").version == 1
    assert list_net_versions(store, "main") == [1] and load_net(store, "main", 2) is None

    retry = load_latest_net(store, "main").next_version()  # the orphan is overwritten
    commit_net(store, retry)
    assert load_latest_net(store, "main") == retry and "dog" not in retry.category_modules
