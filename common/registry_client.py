"""The one ModuleRegistry client, for sites and admins alike.

Only spec JSON and safetensors bytes travel, in chunks of at most CHUNK_SIZE. The stream functions
take a stub and raise grpc.RpcError as it comes; `RegistryClient` adds retries (UNAVAILABLE, with
exponential backoff: the coordinator may be starting or restarting) and turns every other status
into a RegistryError naming the module. Every download is checked: one ModuleInfo first (announcing the
size the caller's ref gives, when it gives one), chunks at the expected offsets, no more bytes than
announced (nor than MAX_DOWNLOAD_BYTES), then the size and sha256 against the caller's ref, or else against
the announced ones.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Self, TypeVar

import grpc

from common.errors import DownloadError, RegistryError, RegistryUnavailable
from common.patterns import CHUNK_SIZE, MAX_DOWNLOAD_BYTES, check_target
from common.security import PLAINTEXT, ClientSecurity
from common.stages import Stage
from protos.nt.v1 import chunk_pb2, common_pb2, registry_pb2, registry_pb2_grpc

log = logging.getLogger("common.registry_client")
OWN_THREAD_BYTES = 4 * CHUNK_SIZE  # smaller downloads are hashed inline: a thread would cost more than it saves
T = TypeVar("T")


def upload_requests(header: registry_pb2.UploadHeader, data: bytes, chunk_size: int = CHUNK_SIZE,
                    sent: Callable[[int], object] | None = None) -> Iterator[registry_pb2.UploadRequest]:
    """The header, then the bytes in chunks; `sent(n)` after gRPC has taken each chunk."""
    yield registry_pb2.UploadRequest(header=header)
    for offset in range(0, len(data), chunk_size):
        piece = data[offset:offset + chunk_size]
        yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=piece, offset=offset))
        if sent is not None:
            sent(len(piece))


def make_header(site_id: str, category: str, role: common_pb2.ModuleRole, data: bytes, spec_json: str = "",
                task: str = "", feature_norm_mean: float = 0.0, num_images: int = 0) -> registry_pb2.UploadHeader:
    return registry_pb2.UploadHeader(
        site_id=site_id, category=category, role=role, task=task, spec_json=spec_json,
        sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
        stats=common_pb2.FeatureStats(feature_norm_mean=feature_norm_mean, num_images=num_images))


def upload(stub: registry_pb2_grpc.ModuleRegistryStub, header: registry_pb2.UploadHeader, data: bytes,
           chunk_size: int = CHUNK_SIZE, timeout: float = 60.0) -> registry_pb2.UploadReply:
    return stub.Upload(upload_requests(header, data, chunk_size), timeout=timeout)


def collect(stream: Iterable[registry_pb2.DownloadReply], name: str, digest: hashlib._Hash | None = None,
            size_bytes: int = 0) -> tuple[registry_pb2.ModuleInfo, bytes | bytearray]:
    """(info, bytes) of a Download stream; stops at the first misbehaviour (DownloadError). With `digest`,
    every chunk is hashed as it arrives, on its own thread (common.stages): no second pass over the bytes.

    When the ModuleInfo announces the size, the chunks are copied into one buffer of that size as they arrive
    (a bytearray, returned as it is): the module is written into fresh memory once, not once as the chunks
    and again as their join. Readers take it without a copy (transplant.spec.weights_from_bytes). With
    `size_bytes` (the caller's ref), an announcement of another size ends the stream before any allocation."""
    info, parts, received = None, [], 0
    buffer: bytearray | None = None
    hasher: Stage | None = None
    try:
        for reply in stream:
            if reply.WhichOneof("payload") == "info":
                if info is not None:
                    raise DownloadError(f"download of {name}: second ModuleInfo in the stream")
                info = reply.info
                if size_bytes and info.size_bytes and info.size_bytes != size_bytes:
                    raise DownloadError(f"download of {name}: announces {info.size_bytes} bytes, the ref says "
                                        f"{size_bytes}")
                if digest is not None and info.size_bytes >= OWN_THREAD_BYTES:
                    hasher = Stage("sha256", digest.update)
                if 0 < info.size_bytes <= MAX_DOWNLOAD_BYTES:
                    buffer = bytearray(info.size_bytes)
                continue
            if info is None:
                raise DownloadError(f"download of {name}: chunk before ModuleInfo")
            chunk = reply.chunk
            if chunk.offset != received:
                raise DownloadError(f"download of {name}: chunk at offset {chunk.offset}, expected {received}")
            data = chunk.data  # one copy out of the message
            end = received + len(data)
            if end > min(info.size_bytes or MAX_DOWNLOAD_BYTES, MAX_DOWNLOAD_BYTES):
                raise DownloadError(f"download of {name}: more bytes than announced ({info.size_bytes})")
            piece: bytes | memoryview = data
            if buffer is not None:
                buffer[received:end] = data
                piece = memoryview(buffer)[received:end]  # never written again: safe to hash on a thread
            else:
                parts.append(data)
            received = end
            if hasher is not None:
                hasher.put(piece)
            elif digest is not None:
                digest.update(piece)
    finally:
        if hasher is not None:
            hasher.close()
    if info is None:
        raise DownloadError(f"download of {name}: empty stream")
    if buffer is None:
        return info, b"".join(parts)
    if received < len(buffer):  # fewer bytes than announced: verify() names the shortfall
        return info, bytes(memoryview(buffer)[:received])
    return info, buffer


def verify(name: str, data: bytes | bytearray, sha256: str, size_bytes: int, digest: str | None = None) -> None:
    """DownloadError unless `data` has `size_bytes` bytes and digest `sha256` (each checked when given);
    `digest`: the sha256 already computed while the bytes arrived."""
    if size_bytes and len(data) != size_bytes:
        raise DownloadError(f"{name}: received {len(data)} bytes, expected {size_bytes}")
    digest = digest or hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256.lower():
        raise DownloadError(f"{name}: sha256 of the received bytes is {digest}, the ref says {sha256}")


def download(stub: registry_pb2_grpc.ModuleRegistryStub, module_id: str, chunk_size: int = 0,
             timeout: float = 300.0, sha256: str = "", size_bytes: int = 0,
             what: str = "") -> tuple[registry_pb2.ModuleInfo, bytes | bytearray]:
    """(info, weights bytes), checked as the module docstring says; chunk_size 0: the server's default."""
    name = what or f"module '{module_id}'"
    call = stub.Download(registry_pb2.DownloadRequest(module_id=module_id, chunk_size=chunk_size), timeout=timeout)
    digest = hashlib.sha256()
    try:
        info, data = collect(call, name, digest, size_bytes)
    finally:
        call.cancel()  # no-op once complete; stops the server stream if we bailed out early
    verify(name, data, sha256 or info.sha256, size_bytes or info.size_bytes, digest.hexdigest())
    return info, data


class RegistryClient:
    """A channel to the registry with retries; every final failure is a RegistryError naming the module."""

    def __init__(self, target: str, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 120.0,
                 chunk_size: int = CHUNK_SIZE, security: ClientSecurity = PLAINTEXT) -> None:
        """`security`: the caller's token (sent as `authorization: Bearer` on every call) and TLS settings."""
        self.target = check_target(target)
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValueError(f"chunk size must lie in 1..{CHUNK_SIZE} bytes")
        self.retries, self.backoff_s = max(1, retries), backoff_s
        self.timeout_s, self.chunk_size = timeout_s, chunk_size
        self.channel = security.channel(target)
        self.stub = registry_pb2_grpc.ModuleRegistryStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run fn, retrying UNAVAILABLE with exponential backoff; other errors are final."""
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code != grpc.StatusCode.UNAVAILABLE:
                    raise RegistryError(f"{what} failed: {code.name}: {details}", code) from None
                if attempt == self.retries:
                    raise RegistryUnavailable(f"coordinator {self.target} unreachable after {self.retries} "
                                              f"attempt(s) ({what}): {details}") from None
                delay = min(self.backoff_s * 2 ** (attempt - 1), 10.0)
                log.warning("%s: coordinator unavailable (%s); retry %d/%d in %.1fs",
                            what, details, attempt, self.retries - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def upload(self, header: registry_pb2.UploadHeader, data: bytes, name: str = "",
               progress: bool = False) -> registry_pb2.UploadReply:
        """Stream one module (`name` in messages and the progress bar); the stored sha256 must be ours."""
        name = name or header.task or header.category
        sha256 = header.sha256  # make_header hashed the bytes once; the registry hashes what it received

        def attempt() -> registry_pb2.UploadReply:
            from tqdm import tqdm

            with tqdm(total=len(data), desc=f"push {name}", unit="B", unit_scale=True, unit_divisor=1024,
                      disable=not progress, leave=True) as bar:
                return self.stub.Upload(upload_requests(header, data, self.chunk_size, bar.update),
                                        timeout=self.timeout_s)

        reply = self._call(f"upload of module '{name}'", attempt)
        if reply.sha256 and reply.sha256 != sha256:
            raise RegistryError(f"upload of module '{name}': registry stored sha256 {reply.sha256}, sent {sha256}")
        return reply

    def list(self, site_id: str = "", category: str = "", task: str = "",
             role: common_pb2.ModuleRole = common_pb2.MODULE_ROLE_UNSPECIFIED) -> list[registry_pb2.ModuleInfo]:
        request = registry_pb2.ListModulesRequest(site_id=site_id, category=category, task=task, role=role)
        return list(self._call("list", lambda: self.stub.List(request, timeout=self.timeout_s)).modules)

    def delete(self, module_id: str, site_id: str) -> bool:
        request = registry_pb2.DeleteModuleRequest(module_id=module_id, site_id=site_id)
        reply = self._call(f"delete of module '{module_id}'", lambda: self.stub.Delete(request, timeout=self.timeout_s))
        return reply.deleted

    def download(self, module_id: str, sha256: str = "", size_bytes: int = 0,
                 what: str = "") -> tuple[registry_pb2.ModuleInfo, bytes | bytearray]:
        """A module's info and weights; offsets, size and sha256 checked against the ref when given."""
        name = what or f"module '{module_id}'"
        return self._call(f"download of {name}", lambda: download(
            self.stub, module_id, self.chunk_size, self.timeout_s, sha256, size_bytes, name))


__all__ = ["RegistryClient", "collect", "download", "make_header", "upload", "upload_requests", "verify"]
