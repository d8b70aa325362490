"""SiteAgent.Evaluate end to end: a fake registry serves the modules, the site downloads and scores them."""
from __future__ import annotations

import hashlib
import time

import grpc
import pytest
import torch

from protos.nt.v1 import common_pb2, registry_pb2, site_pb2, site_pb2_grpc
from site_agent.client import RegistryClient
from site_agent.errors import SiteAgentError
from site_agent.heartbeat import Heartbeat
from site_agent.service import start_site_agent
from site_agent.workspace import eval_split, load_info, load_spec_module
from transplant.adapter import Adapter, AdapterConfig, adapter_to_bytes
from transplant.spec import build_module, output_shape, weights_to_bytes


def identity_adapter(workspace) -> Adapter:
    """1x1 conv with identity weights: f's output is >= 0 (ReLU + max-pool), so ReLU(Ix) = x."""
    channels = output_shape(load_spec_module(workspace).spec)[0]
    adapter = Adapter(AdapterConfig(channels=channels, layers=1, kernel_size=1))
    with torch.no_grad():
        adapter.convs[0].weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
        adapter.convs[0].bias.zero_()
    return adapter


def ref(module_id: str, data: bytes) -> common_pb2.ModuleRef:
    return common_pb2.ModuleRef(module_id=module_id, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def serve(workspace, coordinator, task: str = "classification"):
    """Push the workspace, store an identity adapter, start a site agent; returns (stub, request, handle, channel)."""
    with RegistryClient(coordinator.target) as client:
        ids = client.push_workspace(workspace, progress=False)
    config_json, weights = adapter_to_bytes(identity_adapter(workspace))
    info = load_info(workspace)
    adapter_id = coordinator.registry.add(
        registry_pb2.UploadHeader(site_id="coordinator", category=info.category, role=common_pb2.ADAPTER,
                                  spec_json=config_json), weights)
    handle = start_site_agent(workspace, coordinator.target, "127.0.0.1", 0, heartbeat_s=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    refs = {name: common_pb2.ModuleRef(module_id=r["module_id"], sha256=r["sha256"]) for name, r in ids.items()}
    request = site_pb2.EvaluateRequest(
        job_id="job-1", category=info.category, task=task, adapter=ref(adapter_id, weights),
        task_module=refs[f"task:{task}"], category_module=refs["category"], adapter_config_json=config_json)
    return site_pb2_grpc.SiteAgentStub(channel), request, handle, channel


@pytest.fixture
def site(workspace, coordinator):
    """Digits site serving; yields (stub, request, coordinator, handle)."""
    stub, request, handle, channel = serve(workspace, coordinator)
    yield stub, request, coordinator, handle
    channel.close()
    handle.stop(grace=0)


def call(stub, request):
    return stub.Evaluate(request, timeout=30)


def test_identity_adapter_matches_teacher(site, workspace):
    stub, request, coordinator, handle = site
    reply = call(stub, request)
    metrics = {m.name: m.value for m in reply.metrics}
    assert set(metrics) == {"error_rate", "teacher_error_rate"}
    assert metrics["error_rate"] == pytest.approx(metrics["teacher_error_rate"])
    info = load_info(workspace)
    assert metrics["teacher_error_rate"] == pytest.approx(info.teacher_metrics["classification"]["error_rate"])
    assert reply.site_id == "site-3" and reply.num_samples == len(eval_split(info))
    deadline = time.time() + 5
    while not coordinator.heartbeat.pings and time.time() < deadline:
        time.sleep(0.05)
    assert ("site-3", f"127.0.0.1:{handle.port}") in coordinator.heartbeat.pings


def test_segmentation_identity_adapter_matches_teacher(seg_workspace, coordinator):
    stub, request, handle, channel = serve(seg_workspace, coordinator, "segmentation")
    try:
        reply = call(stub, request)
    finally:
        channel.close()
        handle.stop(grace=0)
    metrics = {m.name: m.value for m in reply.metrics}
    assert set(metrics) == {"pixel_accuracy", "iou", "teacher_pixel_accuracy", "teacher_iou"}
    assert metrics["pixel_accuracy"] == pytest.approx(metrics["teacher_pixel_accuracy"])
    assert metrics["iou"] == pytest.approx(metrics["teacher_iou"])
    test = eval_split(load_info(seg_workspace))
    assert reply.num_samples == int((test.labels == 1).sum())  # segmentation is scored on the positives


def _code(stub, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(stub, request)
    return err.value.code(), err.value.details()


def test_rejects_sha_mismatch(site):
    stub, request, coordinator, _ = site
    request.task_module.sha256 = hashlib.sha256(b"something else").hexdigest()
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in details


def test_rejects_tampered_download(site):
    stub, request, coordinator, _ = site
    coordinator.registry.tamper.add(request.adapter.module_id)
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in details


def test_rejects_foreign_category_module(site, workspace):
    stub, request, coordinator, _ = site
    foreign = build_module(load_spec_module(workspace).spec)  # same architecture, other weights
    data = weights_to_bytes(foreign)
    module_id = coordinator.registry.add(
        registry_pb2.UploadHeader(site_id="site-5", category="3", role=common_pb2.CATEGORY,
                                  spec_json=foreign.spec.dumps()), data)
    request.category_module.CopyFrom(ref(module_id, data))
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "own" in details


def test_rejects_malformed_task_module(site, workspace):
    stub, request, coordinator, _ = site
    data = (workspace / "tasks" / "classification" / "module.safetensors").read_bytes()
    wrong_spec = load_spec_module(workspace).spec.dumps()  # the category's spec: weights do not fit
    module_id = coordinator.registry.add(
        registry_pb2.UploadHeader(site_id="site-9", category="9", role=common_pb2.TASK, task="classification",
                                  spec_json=wrong_spec), data)
    request.task_module.CopyFrom(ref(module_id, data))
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed" in details


@pytest.mark.parametrize("change, message", [
    (lambda r: setattr(r, "task", "segmentation"), "no 'segmentation' task"),
    (lambda r: setattr(r, "category", "5"), "holds category '3'"),
    (lambda r: setattr(r, "adapter_config_json", '{"format": "nope"}'), "malformed"),
    (lambda r: setattr(r, "adapter_config_json", ""), "adapter_config_json is empty"),
])
def test_rejects_invalid_requests(site, change, message):
    stub, request, _, _ = site
    change(request)
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_heartbeat_tolerates_unreachable_coordinator():
    beat = Heartbeat("127.0.0.1:1", "site-x", "127.0.0.1:9", interval_s=0.05).start()
    time.sleep(0.3)
    assert beat.failures >= 1 and beat.pings == 0 and beat._thread.is_alive()
    beat.stop()
    assert not beat._thread.is_alive()


def test_taken_port_is_an_error(site, workspace, coordinator):
    _, _, _, handle = site
    with pytest.raises(SiteAgentError, match="cannot listen"):
        start_site_agent(workspace, coordinator.target, "127.0.0.1", handle.port)


def test_a_small_config_for_a_huge_adapter_is_refused_in_milliseconds(site):
    """The 84-byte memory bomb (4096 channels x 2 layers, k=3): refused against the site's own category
    module before any weights are fetched or any adapter is built."""
    import time

    from transplant.adapter import AdapterConfig

    stub, request, _, _ = site
    request.adapter_config_json = AdapterConfig(channels=4096, layers=2, kernel_size=3).dumps()
    start = time.perf_counter()
    code, details = _code(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "4096 channels" in details
    assert time.perf_counter() - start < 2.0
