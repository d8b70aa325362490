"""Messages survive serialisation, and the services expose the expected methods."""

from __future__ import annotations

from protos.nt.v1 import (
    chunk_pb2,
    common_pb2,
    control_pb2,
    control_pb2_grpc,
    heartbeat_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    site_pb2,
    site_pb2_grpc,
)


def round_trip(message):  # noqa: ANN001, ANN201 - any protobuf message
    return type(message).FromString(message.SerializeToString())


def test_upload_header_then_chunk() -> None:
    header = registry_pb2.UploadRequest(header=registry_pb2.UploadHeader(
        site_id="site-a", category="cat", role=common_pb2.CATEGORY, spec_json='{"k": 1}',
        sha256="ab" * 32, size_bytes=3,
        stats=common_pb2.FeatureStats(feature_norm_mean=12.5, num_images=40),
        metadata={"torch": "2.13"},
    ))
    chunk = registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=b"\x00\x01\x02", offset=0))
    assert round_trip(header) == header and round_trip(header).WhichOneof("payload") == "header"
    assert round_trip(header).header.stats.num_images == 40
    assert round_trip(chunk).WhichOneof("payload") == "chunk"
    assert round_trip(chunk).chunk.data == b"\x00\x01\x02"


def test_job_and_net() -> None:
    spec = control_pb2.TransplantJobSpec(
        category="cat", task="segmentation", method="back_distill", samples=20,
        adapter=control_pb2.AdapterConfig(layers=2, kernel_size=3, reorder=True),
        seed=7, teacher_site_id="a", generic_site_id="b", steps=500,
    )
    job = control_pb2.Job(
        job_id="j1", spec=spec, state=control_pb2.EVALUATING, created=1.5, attempts=2,
        metrics=[common_pb2.Metric(name="miou", value=0.61)],
        adapter_ref=common_pb2.ModuleRef(module_id="ad1", sha256="cd" * 32, size_bytes=99),
    )
    assert round_trip(job) == job
    assert control_pb2.JobState.Name(round_trip(job).state) == "EVALUATING"
    net = control_pb2.GetNetReply(name="main", version=3, entries=[control_pb2.NetEntry(
        category="cat", task="segmentation", adapter_id="ad1",
        quality=[common_pb2.Metric(name="miou", value=0.6)],
    )])
    assert round_trip(net).entries[0].quality[0].value == 0.6


def test_evaluate_request() -> None:
    request = site_pb2.EvaluateRequest(
        job_id="j1", category="cat", task="classification",
        adapter=common_pb2.ModuleRef(module_id="ad1"), adapter_config_json='{"layers": 1}',
    )
    assert round_trip(request) == request


def test_enum_zero_values_mean_unset() -> None:
    assert registry_pb2.ListModulesRequest().role == common_pb2.MODULE_ROLE_UNSPECIFIED
    assert control_pb2.Job().state == control_pb2.JOB_STATE_UNSPECIFIED


def test_services_have_expected_methods() -> None:
    def methods(module, service: str) -> set[str]:  # noqa: ANN001
        return set(module.DESCRIPTOR.services_by_name[service].methods_by_name)

    assert methods(registry_pb2, "ModuleRegistry") == {"Upload", "Download", "List", "Delete"}
    assert methods(control_pb2, "Control") == {
        "SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob", "GetNet", "GetJobHistory", "PromoteJob",
        "RollbackNet", "ListSites"}
    assert registry_pb2.DESCRIPTOR.package == "transplant.v1"
    for grpc_module, stub in [
        (registry_pb2_grpc, "ModuleRegistryStub"), (control_pb2_grpc, "ControlStub"),
        (site_pb2_grpc, "SiteAgentStub"), (heartbeat_pb2_grpc, "HeartbeatStub"),
    ]:
        assert hasattr(grpc_module, stub)
