"""Pushing a workspace to a (fake, in-test) ModuleRegistry: headers, chunks, bytes, retries, errors."""
from __future__ import annotations

import hashlib

import pytest

from common.errors import RegistryError, RegistryUnavailable
from protos.nt.v1 import common_pb2
from site_agent.client import RegistryClient
from site_agent.workspace import load_info, load_pushed, module_files
from transplant.spec import ModuleSpec, weights_from_bytes


def test_push_streams_exact_bytes_with_headers(workspace, coordinator):
    with RegistryClient(coordinator.target, chunk_size=64 * 1024) as client:
        ids = client.push_workspace(workspace, progress=False)
    fake = coordinator.registry
    assert list(ids) == ["category", "task:classification", "samples"]
    assert load_pushed(workspace) == ids
    roles = [h.role for h in fake.headers]
    assert roles == [common_pb2.CATEGORY, common_pb2.TASK, common_pb2.SAMPLES]
    assert max(fake.chunk_sizes) == 64 * 1024 and len(fake.chunk_sizes) > 3  # the task module spans chunks
    info = load_info(workspace)
    for (name, ref), header in zip(ids.items(), fake.headers):
        stored = fake.modules[ref["module_id"]]
        local = {m.name: m for m in module_files(workspace)}[name]
        assert stored.data == local.data and header.sha256 == hashlib.sha256(local.data).hexdigest()
        assert header.size_bytes == len(local.data) and header.site_id == "site-3" and header.category == "3"
        assert header.metadata["kind"] == local.role
        if name != "samples":
            weights_from_bytes(stored.data, ModuleSpec.loads(header.spec_json))  # spec and weights agree
    category, task = fake.headers[0], fake.headers[1]
    assert category.stats.feature_norm_mean == pytest.approx(info.feature_norm_mean)
    assert category.stats.num_images == info.num_images and category.task == ""
    assert task.task == "classification" and "teacher_error_rate" in task.metadata
    assert stored.data == (workspace / "samples.safetensors").read_bytes()


def test_push_retries_unavailable(workspace, coordinator):
    coordinator.registry.unavailable = 2
    with RegistryClient(coordinator.target, retries=3, backoff_s=0.01) as client:
        ids = client.push_workspace(workspace, progress=False)
    assert len(ids) == 3 and len(coordinator.registry.headers) == 3


def test_push_other_error_names_the_module(workspace, coordinator):
    coordinator.registry.reject = "TASK"
    with RegistryClient(coordinator.target, backoff_s=0.01) as client:
        with pytest.raises(RegistryError, match=r"task:classification.*INVALID_ARGUMENT") as err:
            client.push_workspace(workspace, progress=False)
    assert err.value.code.name == "INVALID_ARGUMENT"


def test_push_unreachable_gives_up(workspace):
    with RegistryClient("127.0.0.1:1", retries=2, backoff_s=0.01) as client:
        with pytest.raises(RegistryUnavailable, match="unreachable after 2"):
            client.push_workspace(workspace, progress=False)


def test_list_delete_and_download(workspace, coordinator):
    with RegistryClient(coordinator.target) as client:
        ids = client.push_workspace(workspace, progress=False)
        assert {m.module_id for m in client.list(site_id="site-3")} == {r["module_id"] for r in ids.values()}
        ref = ids["task:classification"]
        info, data = client.download(ref["module_id"], ref["sha256"])
        assert data == (workspace / "tasks" / "classification" / "module.safetensors").read_bytes()
        assert info.task == "classification"
        assert client.delete(ref["module_id"], "site-3") is True
        assert client.delete(ref["module_id"], "site-3") is False
        with pytest.raises(RegistryError, match="NOT_FOUND"):
            client.download(ref["module_id"])
        assert len(client.list(site_id="site-3")) == 2
