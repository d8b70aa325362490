"""ModuleRegistry over real gRPC on loopback: round trips and every validation rejection."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from safetensors.torch import save as st_save

from common.registry_client import download, make_header, upload, upload_requests
from coordinator.registry_service import RegistryService
from coordinator.store import LocalStore
from coordinator.manifests import list_module_records
from coordinator.validation import UploadLimits
from protos.nt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.helpers.registry import nan_weights, serve_registry, tiny_category, wrong_shape_weights
from transplant.adapter import Adapter, AdapterConfig, adapter_to_bytes


@pytest.fixture
def registry(tmp_path):
    store = LocalStore(tmp_path / "store")
    limits = UploadLimits(max_upload_bytes=1 << 20, site_quota_bytes=200_000)
    server, channel = serve_registry(RegistryService(store, limits, tmp_path / "spool"))
    yield store, registry_pb2_grpc.ModuleRegistryStub(channel)
    channel.close()
    server.stop(0)


def snapshot(store: LocalStore) -> tuple[list[str], list[str]]:
    blobs = sorted(p.name for p in (store.root / "blobs").rglob("*") if p.is_file())
    return store.list_keys(""), blobs


def test_round_trip_chunked(registry) -> None:
    store, stub = registry
    spec_json, data = tiny_category()
    header = make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=2.5)
    chunk = len(data) // 4 + 1
    reply = upload(stub, header, data, chunk_size=chunk)
    assert len(list(upload_requests(header, data, chunk))) > 4  # header + > 3 chunks
    assert reply.module_id.startswith("site-a-category-3-") and reply.sha256 == header.sha256
    info, back = download(stub, reply.module_id, chunk_size=100)
    assert back == data and info.spec_json == spec_json and info.stats.feature_norm_mean == 2.5
    again = upload(stub, header, data)  # identical re-upload: same id
    assert again.module_id == reply.module_id
    listed = stub.List(registry_pb2.ListModulesRequest(site_id="site-a", role=common_pb2.CATEGORY))
    assert [m.module_id for m in listed.modules] == [reply.module_id]
    assert not stub.List(registry_pb2.ListModulesRequest(role=common_pb2.TASK)).modules


def test_adapter_and_samples_roles(registry) -> None:
    store, stub = registry
    config_json, data = adapter_to_bytes(Adapter(AdapterConfig(channels=8)))
    upload(stub, make_header("coord", "3", common_pb2.ADAPTER, data, config_json, task="classification"), data)
    samples = st_save({"images": torch.rand(5, 1, 16, 16), "labels": torch.tensor([0, 1, 0, 1, 1])})
    reply = upload(stub, make_header("site-a", "3", common_pb2.SAMPLES, samples), samples)
    info, _ = download(stub, reply.module_id)
    assert info.stats.num_images == 5


def test_delete_requires_owner(registry) -> None:
    store, stub = registry
    spec_json, data = tiny_category()
    reply = upload(stub, make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=1), data)
    with pytest.raises(grpc.RpcError) as err:
        stub.Delete(registry_pb2.DeleteModuleRequest(module_id=reply.module_id, site_id="site-b"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stub.Delete(registry_pb2.DeleteModuleRequest(module_id=reply.module_id, site_id="site-a")).deleted
    assert snapshot(store) == ([], [])
    with pytest.raises(grpc.RpcError) as err:
        download(stub, reply.module_id)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _bad_uploads():
    spec_json, data = tiny_category()
    good = make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=1.0)

    def header(**changes):
        h = registry_pb2.UploadHeader()
        h.CopyFrom(good)
        for k, v in changes.items():
            setattr(h, k, v)
        return h

    nan = nan_weights(spec_json, data)
    shape = wrong_shape_weights(data)
    samples_bad = st_save({"images": torch.rand(3, 1, 4, 4), "labels": torch.zeros(3)})  # float labels
    return {
        "malformed spec": (header(spec_json='{"format": "nope"'), data, "spec"),
        "cyclic or wrong spec": (header(spec_json='{"format":"x","nodes":[]}'), data, "spec"),
        "bad site id": (header(site_id="../evil"), data, "site id"),
        # wire names may hold '.', but a category names modules of a net (torch ModuleDict keys)
        "category a net cannot hold": (header(category="cat.v2"), data, "category 'cat.v2' is invalid"),
        "category with the adapter separator": (header(category="cat__x"), data, "single '_'"),
        "no role": (header(role=common_pb2.MODULE_ROLE_UNSPECIFIED), data, "role"),
        "nan weights": (make_header("site-a", "3", common_pb2.CATEGORY, nan, spec_json, feature_norm_mean=1), nan,
                        "NaN"),
        "wrong shape": (make_header("site-a", "3", common_pb2.CATEGORY, shape, spec_json, feature_norm_mean=1),
                        shape, "shape"),
        "truncated": (header(), data[:-10], "truncated"),
        "sha mismatch": (header(sha256="0" * 64), data, "sha256"),
        "not safetensors": (make_header("site-a", "3", common_pb2.CATEGORY, b"x" * 100, spec_json,
                                        feature_norm_mean=1), b"x" * 100, "safetensors"),
        "samples dtype": (make_header("site-a", "3", common_pb2.SAMPLES, samples_bad), samples_bad, "labels"),
    }


@pytest.mark.parametrize("case", sorted(_bad_uploads()))
def test_rejections_leave_store_unchanged(registry, case) -> None:
    store, stub = registry
    header, data, word = _bad_uploads()[case]
    before = snapshot(store)
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, header, data, chunk_size=4096)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert word.lower() in err.value.details().lower()
    assert snapshot(store) == before


def test_quota_and_size_limit(tmp_path) -> None:
    spec_json, data = tiny_category()
    store = LocalStore(tmp_path / "store")
    limits = UploadLimits(max_upload_bytes=1 << 20, site_quota_bytes=2 * len(data) + 10)
    server, channel = serve_registry(RegistryService(store, limits))
    stub = registry_pb2_grpc.ModuleRegistryStub(channel)
    try:
        for category in ("3", "4"):  # same bytes, other category: a second record that counts again
            upload(stub, make_header("site-a", category, common_pb2.CATEGORY, data, spec_json,
                                     feature_norm_mean=1), data)
        before = snapshot(store)
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, make_header("site-a", "5", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=1),
                   data)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in err.value.details()
        huge = make_header("site-b", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=1)
        huge.size_bytes = 2 << 20
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, huge, data)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in err.value.details()
        assert snapshot(store) == before
    finally:
        channel.close()
        server.stop(0)


def test_concurrent_uploads_cannot_both_fit_one_quota(tmp_path) -> None:
    """An upload in flight holds its declared size: a second one that would overrun the quota is refused."""
    spec_json, data = tiny_category()
    store = LocalStore(tmp_path / "store")
    service = RegistryService(store, UploadLimits(max_upload_bytes=1 << 20, site_quota_bytes=len(data) * 3 // 2))
    server, channel = serve_registry(service)
    stub = registry_pb2_grpc.ModuleRegistryStub(channel)
    release = threading.Event()

    def slow_requests():
        requests = upload_requests(make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json,
                                               feature_norm_mean=1), data, len(data) // 2 + 1)
        yield next(requests)  # the header: the server reserves its size now
        release.wait(30)
        yield from requests

    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(stub.Upload, slow_requests())
            deadline = time.monotonic() + 30
            while not service._in_flight and time.monotonic() < deadline:
                time.sleep(0.01)
            assert service._in_flight == {"site-a": len(data)}
            with pytest.raises(grpc.RpcError) as err:
                upload(stub, make_header("site-a", "4", common_pb2.CATEGORY, data, spec_json,
                                         feature_norm_mean=1), data)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in err.value.details()
            release.set()
            assert first.result(30).module_id.startswith("site-a-category-3-")
        assert service._in_flight == {}
        assert [r.category for r in list_module_records(store, "site-a")] == ["3"]
    finally:
        release.set()
        channel.close()
        server.stop(0)


def test_a_differing_re_upload_never_replaces_a_stored_record(registry) -> None:
    """Same weights, another spec (max-pool -> avg-pool) or other feature statistics: another module id,
    and the first record stays exactly as it was (a committed net that points at it cannot change)."""
    import json

    store, stub = registry
    spec_json, data = tiny_category()
    first = upload(stub, make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=2.5),
                   data)
    before = download(stub, first.module_id)[0]
    doc = json.loads(spec_json)
    for node in doc["nodes"]:
        if node["op"] == "maxpool2d":
            node["op"] = "avgpool2d"
    other_spec = json.dumps(doc)
    other_spec_id = upload(stub, make_header("site-a", "3", common_pb2.CATEGORY, data, other_spec,
                                             feature_norm_mean=2.5), data).module_id
    other_stats_id = upload(stub, make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json,
                                              feature_norm_mean=9.0), data).module_id
    assert len({first.module_id, other_spec_id, other_stats_id}) == 3
    after = download(stub, first.module_id)[0]
    assert after == before and after.spec_json == spec_json and after.stats.feature_norm_mean == 2.5
    assert download(stub, other_spec_id)[0].spec_json == other_spec
    assert download(stub, other_stats_id)[0].stats.feature_norm_mean == 9.0
    assert upload(stub, make_header("site-a", "3", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=2.5),
                  data).module_id == first.module_id  # identical: the same id, the record untouched
    assert download(stub, first.module_id)[0] == before
    assert len(list_module_records(store, "site-a")) == 3
