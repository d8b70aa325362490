"""Fixtures for the site agent: a tiny trained workspace and an in-test fake coordinator.

The fake ModuleRegistry checks what a real one must (header first, contiguous offsets, size
and sha256) and records everything, so tests can compare received bytes with the workspace.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from protos.nt.v1 import chunk_pb2, common_pb2, heartbeat_pb2, heartbeat_pb2_grpc, registry_pb2, registry_pb2_grpc
from site_agent.train import TrainOptions, train_site

TINY = dict(size=16, width=8, depth=3, fc=32, epochs=3, seed=0)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A digits-3 teacher (vgg_small(width=8, depth=3, image_size=16, in_channels=1)), trained in seconds."""
    ws = tmp_path_factory.mktemp("site") / "ws"
    train_site(TrainOptions(site_id="site-3", data="digits:3", share_samples=8, **TINY), ws, progress=False)
    return ws


@pytest.fixture(scope="session")
def seg_workspace(tmp_path_factory):
    """A shapes-cat teacher with classification and segmentation heads (few images, one epoch)."""
    ws = tmp_path_factory.mktemp("site-seg") / "ws"
    opts = TrainOptions(site_id="site-cat", data="shapes:cat", n_train=120, n_test=40, **{**TINY, "epochs": 1})
    train_site(opts, ws, progress=False)
    return ws


@dataclass
class Stored:
    info: registry_pb2.ModuleInfo
    data: bytes


@dataclass
class FakeRegistry(registry_pb2_grpc.ModuleRegistryServicer):
    modules: dict[str, Stored] = field(default_factory=dict)
    headers: list[registry_pb2.UploadHeader] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    unavailable: int = 0        # answer this many Upload calls with UNAVAILABLE first
    reject: str = ""            # abort uploads of this role name with INVALID_ARGUMENT
    tamper: set = field(default_factory=set)  # module ids whose downloads get a flipped byte
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, header: registry_pb2.UploadHeader, data: bytes) -> str:
        module_id = f"{header.site_id}-{header.role}-{hashlib.sha256(data).hexdigest()[:12]}"
        info = registry_pb2.ModuleInfo(
            module_id=module_id, spec_json=header.spec_json, sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data), site_id=header.site_id, category=header.category, role=header.role,
            task=header.task, stats=header.stats, metadata=header.metadata)
        with self.lock:
            self.modules[module_id] = Stored(info, data)
        return module_id

    def Upload(self, request_iterator, context):
        with self.lock:
            if self.unavailable:
                self.unavailable -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "starting up")
        first = next(request_iterator)
        if first.WhichOneof("payload") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be a header")
        header = first.header
        if self.reject and self.reject == common_pb2.ModuleRole.Name(header.role):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"role {self.reject} refused")
        parts, offset = [], 0
        for request in request_iterator:
            chunk = request.chunk
            if request.WhichOneof("payload") != "chunk" or chunk.offset != offset:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad chunk order")
            parts.append(chunk.data)
            self.chunk_sizes.append(len(chunk.data))
            offset += len(chunk.data)
        data = b"".join(parts)
        if len(data) != header.size_bytes or hashlib.sha256(data).hexdigest() != header.sha256:
            context.abort(grpc.StatusCode.DATA_LOSS, "size or sha256 mismatch")
        self.headers.append(header)
        module_id = self.add(header, data)
        return registry_pb2.UploadReply(module_id=module_id, sha256=header.sha256, size_bytes=len(data))

    def Download(self, request, context):
        stored = self.modules.get(request.module_id)
        if stored is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no module {request.module_id}")
        data = stored.data
        if request.module_id in self.tamper:
            data = data[:-1] + bytes([data[-1] ^ 1])
        yield registry_pb2.DownloadReply(info=stored.info)
        size = request.chunk_size or (1 << 20)
        for offset in range(0, len(data), size):
            yield registry_pb2.DownloadReply(chunk=chunk_pb2.Chunk(data=data[offset:offset + size], offset=offset))

    def List(self, request, context):
        return registry_pb2.ListModulesReply(modules=[
            s.info for s in self.modules.values() if not request.site_id or s.info.site_id == request.site_id])

    def Delete(self, request, context):
        stored = self.modules.get(request.module_id)
        if stored is None:
            return registry_pb2.DeleteModuleReply(deleted=False)
        if stored.info.site_id != request.site_id:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "not your module")
        del self.modules[request.module_id]
        return registry_pb2.DeleteModuleReply(deleted=True)


@dataclass
class FakeHeartbeat(heartbeat_pb2_grpc.HeartbeatServicer):
    pings: list[tuple[str, str]] = field(default_factory=list)

    def Ping(self, request, context):
        self.pings.append((request.site_id, request.endpoint))
        return heartbeat_pb2.PingReply(ok=True, server_time=0.0)


@dataclass
class FakeCoordinator:
    target: str
    registry: FakeRegistry
    heartbeat: FakeHeartbeat


@pytest.fixture
def coordinator():
    registry, heartbeat = FakeRegistry(), FakeHeartbeat()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(registry, server)
    heartbeat_pb2_grpc.add_HeartbeatServicer_to_server(heartbeat, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield FakeCoordinator(f"127.0.0.1:{port}", registry, heartbeat)
    server.stop(0).wait()
