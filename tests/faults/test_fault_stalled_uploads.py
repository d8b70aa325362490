"""One site's stalled uploads must not starve the registry: per-site stream slots and idle timeouts."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from common.registry_client import make_header, upload, upload_requests
from coordinator.registry_service import RegistryService
from coordinator.store import LocalStore
from coordinator.streams import StreamLimits, StreamTimeout, watched
from protos.nt.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.helpers.registry import serve_registry, tiny_category

pytestmark = pytest.mark.faults


def test_stalled_uploads_of_one_site_leave_the_registry_answering(tmp_path) -> None:
    spec_json, data = tiny_category()
    store = LocalStore(tmp_path / "store")
    service = RegistryService(store, spool_dir=tmp_path / "spool", streams=StreamLimits(per_site=2, idle_s=1.5))
    server, channel = serve_registry(service)  # 4 RPC threads: 6 stalled streams would take them all
    stub = registry_pb2_grpc.ModuleRegistryStub(channel)
    release = threading.Event()

    def stalled(category: str):
        requests = upload_requests(make_header("site-a", category, common_pb2.CATEGORY, data, spec_json,
                                               feature_norm_mean=1), data, len(data) // 2 + 1)
        yield next(requests)  # the header, then nothing
        release.wait(30)

    def outcome(category: str) -> grpc.StatusCode:
        try:
            stub.Upload(stalled(category), timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()

    try:
        with ThreadPoolExecutor(6) as pool:
            start = time.monotonic()
            results = [pool.submit(outcome, str(k)) for k in range(6)]
            time.sleep(0.3)
            listed = stub.List(registry_pb2.ListModulesRequest(site_id="site-b"), timeout=1.0)  # answers
            assert list(listed.modules) == [] and time.monotonic() - start < 1.5
            codes = sorted(r.result(30).name for r in results)
            elapsed = time.monotonic() - start
        assert codes == ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"] * 4, codes
        assert elapsed < 10  # the idle timeout, not the client's 30 s stall
        assert store.list_keys("") == [] and service._in_flight == {}
        reply = upload(stub, make_header("site-a", "9", common_pb2.CATEGORY, data, spec_json, feature_norm_mean=1),
                       data)  # slots and quota were given back
        assert reply.module_id.startswith("site-a-category-9-")
    finally:
        release.set()
        channel.close()
        server.stop(0)


def test_watched_streams_time_out_and_pass_errors_through() -> None:
    def slow():
        yield 1
        time.sleep(2)
        yield 2

    with pytest.raises(StreamTimeout, match="stalled"):
        list(watched(slow(), idle_s=0.3, deadline_s=10))
    with pytest.raises(StreamTimeout, match="deadline"):
        list(watched(iter(lambda: time.sleep(0.1) or 1, None), idle_s=5, deadline_s=0.5))

    def broken():
        yield 1
        raise ValueError("client went away")

    with pytest.raises(ValueError, match="went away"):
        list(watched(broken(), idle_s=1, deadline_s=10))
    assert list(watched(iter(range(5)), idle_s=1, deadline_s=10)) == [0, 1, 2, 3, 4]


def test_twenty_stalled_uploads_of_one_site_leave_admins_and_other_sites_answering(ray_session, tmp_path) -> None:
    """The issue's probe against a whole coordinator with its defaults (16 RPC threads, 4 streams a site):
    one site's token opens 20 uploads that send a header and stall; 16 are refused at once, and the admin's
    ListJobs and another site's Ping and List each answer in under a second while the 4 others stall."""
    from common.guard import ADMIN, SITE
    from protos.nt.v1 import control_pb2, heartbeat_pb2
    from tests.helpers.cluster import coordinator, issue, stubs

    auth_file = tmp_path / "auth.json"
    tokens = {"site-a": issue(auth_file, SITE, "site-a"), "site-b": issue(auth_file, SITE, "site-b"),
              "admin": issue(auth_file, ADMIN, "ops")}
    handle = coordinator(tmp_path, auth_file=auth_file)
    clients = {name: stubs(handle.address, token) for name, token in tokens.items()}
    spec_json, data = tiny_category()
    release = threading.Event()

    def outcome(k: int) -> tuple[str, float]:
        def stalled():
            yield next(upload_requests(make_header("site-a", str(k), common_pb2.CATEGORY, data, spec_json,
                                                   feature_norm_mean=1), data))
            release.wait(60)

        start = time.monotonic()
        try:
            clients["site-a"].registry.Upload(stalled(), timeout=60)
            return "OK", time.monotonic() - start
        except grpc.RpcError as exc:
            return exc.code().name, time.monotonic() - start

    try:
        with ThreadPoolExecutor(20) as pool:
            results = [pool.submit(outcome, k) for k in range(20)]
            time.sleep(1.0)  # every stream is open (or refused) by now
            for name, call in (
                    ("ListJobs", lambda: clients["admin"].control.ListJobs(control_pb2.ListJobsRequest(), timeout=1)),
                    ("Ping", lambda: clients["site-b"].heartbeat.Ping(
                        heartbeat_pb2.PingRequest(site_id="site-b", endpoint="127.0.0.1:7000"), timeout=1)),
                    ("List", lambda: clients["site-b"].registry.List(registry_pb2.ListModulesRequest(), timeout=1))):
                start = time.monotonic()
                call()
                assert time.monotonic() - start < 1.0, name
            refused = [r.result() for r in results if r.done()]
            assert len(refused) == 16 and {code for code, _ in refused} == {"RESOURCE_EXHAUSTED"}, refused
            assert max(seconds for _, seconds in refused) < 1.0  # at once
            release.set()
            assert [r.result(30)[0] for r in results].count("RESOURCE_EXHAUSTED") == 16
    finally:
        release.set()
        for client in clients.values():
            client.close()
        handle.stop(grace_s=1)
