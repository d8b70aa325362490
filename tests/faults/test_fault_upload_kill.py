"""A client that dies in the middle of an upload leaves nothing behind: no record, no blob, no partial file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent import futures

import grpc
import pytest

from common.registry_client import make_header, upload_requests
from coordinator.registry_service import RegistryService
from coordinator.store import LocalStore
from coordinator.manifests import list_module_records
from protos.nt.v1 import common_pb2, registry_pb2_grpc
from tests.helpers.cluster import site_modules

pytestmark = pytest.mark.faults
CHUNK = 128


@pytest.fixture
def registry(tmp_path):
    store, spool = LocalStore(tmp_path / "store"), tmp_path / "spool"
    server = grpc.server(futures.ThreadPoolExecutor(4))
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(RegistryService(store, spool_dir=spool), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield store, spool, port, channel
    channel.close()
    server.stop(0)


def leftovers(store: LocalStore, spool) -> list[str]:
    files = [p for p in store.root.rglob("*") if p.is_file()] + list(spool.iterdir())
    return sorted(str(p) for p in files)


def partial(store: LocalStore) -> list:
    """The upload being written, straight into the store's tmp/ (visible in blobs/ only once valid)."""
    return list((store.root / "tmp").glob("upload-*.part"))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_generator_raising_midway_leaves_nothing(registry) -> None:
    store, spool, _, channel = registry
    (spec, data), _ = site_modules(3)
    header = make_header("site-k", "3", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)

    def dying():
        for i, request in enumerate(upload_requests(header, data, CHUNK)):
            if i == 3:
                wait_until(lambda: partial(store), 10, "the partial file never appeared")
                raise RuntimeError("client crashed")
            yield request

    with pytest.raises(grpc.RpcError) as err:
        registry_pb2_grpc.ModuleRegistryStub(channel).Upload(dying(), timeout=30)
    assert "Exception iterating requests" in err.value.details()  # the client side gave up, not the server
    wait_until(lambda: not leftovers(store, spool), 10, f"left behind: {leftovers(store, spool)}")
    assert not list_module_records(store)


def test_killed_client_process_leaves_nothing(registry, tmp_path) -> None:
    store, spool, port, channel = registry
    (spec, data), _ = site_modules(4)
    (tmp_path / "spec.json").write_text(spec)
    (tmp_path / "weights").write_bytes(data)
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import pathlib, time, grpc
        from common.registry_client import make_header, upload_requests
        from protos.nt.v1 import common_pb2, registry_pb2_grpc
        spec = pathlib.Path({str(tmp_path / 'spec.json')!r}).read_text()
        data = pathlib.Path({str(tmp_path / 'weights')!r}).read_bytes()
        header = make_header("site-k", "3", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
        def part():
            for i, request in enumerate(upload_requests(header, data, {CHUNK})):
                if i == 4:
                    pathlib.Path({str(ready)!r}).touch()
                    time.sleep(120)  # killed here, half-way
                yield request
        with grpc.insecure_channel("127.0.0.1:{port}") as channel:
            registry_pb2_grpc.ModuleRegistryStub(channel).Upload(part(), timeout=300)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_until(lambda: ready.exists() and partial(store), 60, "the client never got half-way")
        assert not list_module_records(store)  # half-way: nothing visible yet
    finally:
        process.kill()  # SIGKILL: no goodbye on the stream
        process.wait(10)
    wait_until(lambda: not leftovers(store, spool), 15, f"left behind: {leftovers(store, spool)}")
    assert not list_module_records(store)
    # the registry is fine afterwards: the same module uploads completely
    from common.registry_client import upload
    header = make_header("site-k", "3", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
    assert upload(registry_pb2_grpc.ModuleRegistryStub(channel), header, data, chunk_size=CHUNK).sha256 == header.sha256
