"""Client side of ModuleRegistry streaming (used by the admin CLI and tests)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from protos.nt.v1 import chunk_pb2, common_pb2, registry_pb2, registry_pb2_grpc

CHUNK_SIZE = 1 << 20


def upload_requests(header: registry_pb2.UploadHeader, data: bytes,
                    chunk_size: int = CHUNK_SIZE) -> Iterator[registry_pb2.UploadRequest]:
    yield registry_pb2.UploadRequest(header=header)
    for offset in range(0, len(data), chunk_size):
        piece = data[offset:offset + chunk_size]
        yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=piece, offset=offset))


def make_header(site_id: str, category: str, role: int, data: bytes, spec_json: str = "", task: str = "",
                feature_norm_mean: float = 0.0, num_images: int = 0) -> registry_pb2.UploadHeader:
    return registry_pb2.UploadHeader(
        site_id=site_id, category=category, role=role, task=task, spec_json=spec_json,
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        stats=common_pb2.FeatureStats(feature_norm_mean=feature_norm_mean, num_images=num_images))


def upload(stub: registry_pb2_grpc.ModuleRegistryStub, header: registry_pb2.UploadHeader, data: bytes,
           chunk_size: int = CHUNK_SIZE, timeout: float = 60.0) -> registry_pb2.UploadReply:
    return stub.Upload(upload_requests(header, data, chunk_size), timeout=timeout)


class DownloadError(Exception):
    """A download ended early, out of order, or with bytes that do not match the announced sha256."""


def download(stub: registry_pb2_grpc.ModuleRegistryStub, module_id: str, chunk_size: int = 0,
             timeout: float = 300.0) -> tuple[registry_pb2.ModuleInfo, bytes]:
    """(info, weights bytes), verified against the announced size and sha256."""
    replies = stub.Download(registry_pb2.DownloadRequest(module_id=module_id, chunk_size=chunk_size),
                            timeout=timeout)
    info, data = None, bytearray()
    for reply in replies:
        if reply.WhichOneof("payload") == "info":
            info = reply.info
            continue
        if reply.chunk.offset != len(data):
            raise DownloadError(f"{module_id}: chunk at offset {reply.chunk.offset}, expected {len(data)}")
        data.extend(reply.chunk.data)
    if info is None:
        raise DownloadError(f"{module_id}: the registry sent no module info")
    if len(data) != info.size_bytes or hashlib.sha256(data).hexdigest() != info.sha256:
        raise DownloadError(f"{module_id}: received bytes do not match the announced size/sha256")
    return info, bytes(data)
