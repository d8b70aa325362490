"""Talk to the coordinator's ModuleRegistry: push a workspace, list and delete own modules, download.

Only spec JSON and safetensors bytes travel, in chunks of at most 1 MiB (gRPC's default message
limit is 4 MiB). UNAVAILABLE is retried with exponential backoff (the coordinator may be starting
or restarting); every other status is final and reported naming the module.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import grpc
import torch
from tqdm import tqdm

from coordinator.auth import PLAINTEXT, ClientSecurity
from protos.nt.v1 import chunk_pb2, common_pb2, registry_pb2, registry_pb2_grpc

from site_agent import teacher_io
from site_agent.errors import SiteAgentError
from site_agent.teacher_io import ModuleFile, SiteInfo

log = logging.getLogger("site_agent.client")
CHUNK_SIZE = 1 << 20
MAX_DOWNLOAD_BYTES = 1 << 30  # refuse to buffer more than this for one module
ROLES = {"category": common_pb2.CATEGORY, "task": common_pb2.TASK, "samples": common_pb2.SAMPLES,
         "adapter": common_pb2.ADAPTER}
T = TypeVar("T")


class RegistryError(SiteAgentError):
    """The registry answered with a final error (anything but UNAVAILABLE)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


def check_target(target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SiteAgentError(f"bad coordinator address {target!r}: expected HOST:PORT")
    return target


def _chunks(data: bytes, chunk_size: int) -> Iterator[tuple[int, bytes]]:
    for offset in range(0, len(data), chunk_size):
        yield offset, data[offset:offset + chunk_size]


def header_for(module: ModuleFile, info: SiteInfo) -> registry_pb2.UploadHeader:
    """Header of one upload; what has no proto field (kind, metrics, sample counts) goes in metadata."""
    metadata = {"kind": module.role, "dataset": info.data.partition(":")[0], "family": info.architecture["name"],
                "image_size": str(info.size), "torch": torch.__version__.split("+")[0]}
    header = registry_pb2.UploadHeader(
        site_id=info.site_id, category=info.category, role=ROLES[module.role], task=module.task,
        spec_json=module.spec_json, sha256=module.sha256, size_bytes=len(module.data), metadata=metadata)
    if module.role == "category":
        header.stats.feature_norm_mean = info.feature_norm_mean
        header.stats.num_images = info.num_images
    elif module.role == "task":
        for name, value in info.teacher_metrics.get(module.task, {}).items():
            header.metadata[f"teacher_{name}"] = f"{value:.6g}"
    else:  # a samples set is no module: its description travels as metadata, the spec stays empty
        header.spec_json = ""
        header.metadata.update({k: str(v) for k, v in json.loads(module.spec_json).items() if k != "format"})
        header.metadata["num_samples"] = str(info.shared_samples)
    return header


class RegistryClient:
    def __init__(self, target: str, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 120.0,
                 chunk_size: int = CHUNK_SIZE, security: ClientSecurity = PLAINTEXT):
        """`security`: the site's token (sent as `authorization: Bearer` on every call) and TLS settings."""
        self.target = check_target(target)
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise SiteAgentError(f"chunk size must lie in 1..{CHUNK_SIZE} bytes")
        self.retries, self.backoff_s = max(1, retries), backoff_s
        self.timeout_s, self.chunk_size = timeout_s, chunk_size
        self.channel = security.channel(target)
        self.stub = registry_pb2_grpc.ModuleRegistryStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RegistryClient:
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
                    raise SiteAgentError(f"coordinator {self.target} unreachable after {self.retries} "
                                         f"attempt(s) ({what}): {details}") from None
                delay = min(self.backoff_s * 2 ** (attempt - 1), 10.0)
                log.warning("%s: coordinator unavailable (%s); retry %d/%d in %.1fs",
                            what, details, attempt, self.retries - 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def upload(self, module: ModuleFile, header: registry_pb2.UploadHeader,
               progress: bool = True) -> registry_pb2.UploadReply:
        def attempt() -> registry_pb2.UploadReply:
            with tqdm(total=len(module.data), desc=f"push {module.name}", unit="B", unit_scale=True,
                      unit_divisor=1024, disable=not progress, leave=True) as bar:
                def requests() -> Iterator[registry_pb2.UploadRequest]:
                    yield registry_pb2.UploadRequest(header=header)
                    for offset, piece in _chunks(module.data, self.chunk_size):
                        yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=piece, offset=offset))
                        bar.update(len(piece))  # counted once gRPC has taken the chunk
                return self.stub.Upload(requests(), timeout=self.timeout_s)

        reply = self._call(f"upload of module '{module.name}'", attempt)
        if reply.sha256 and reply.sha256 != module.sha256:
            raise RegistryError(f"upload of module '{module.name}': registry stored sha256 {reply.sha256}, "
                                f"sent {module.sha256}")
        return reply

    def push_workspace(self, workspace: Path | str, progress: bool = True) -> dict[str, dict[str, str]]:
        """Upload category + task modules (+ shared samples); returns name -> {module_id, sha256}."""
        info = teacher_io.load_info(workspace)
        ids = {}
        for module in teacher_io.module_files(workspace):
            reply = self.upload(module, header_for(module, info), progress)
            ids[module.name] = {"module_id": reply.module_id, "sha256": module.sha256}
        teacher_io.save_pushed(workspace, ids)
        return ids

    def list(self, site_id: str = "", category: str = "", task: str = "") -> list[registry_pb2.ModuleInfo]:
        request = registry_pb2.ListModulesRequest(site_id=site_id, category=category, task=task)
        return list(self._call("list", lambda: self.stub.List(request, timeout=self.timeout_s)).modules)

    def delete(self, module_id: str, site_id: str) -> bool:
        request = registry_pb2.DeleteModuleRequest(module_id=module_id, site_id=site_id)
        reply = self._call(f"delete of module '{module_id}'", lambda: self.stub.Delete(request, timeout=self.timeout_s))
        return reply.deleted

    def download(self, module_id: str, sha256: str = "", size_bytes: int = 0,
                 what: str = "") -> tuple[registry_pb2.ModuleInfo, bytes]:
        """A module's info and weights; offsets, size and sha256 checked against the ref when given."""
        name = what or f"module '{module_id}'"
        request = registry_pb2.DownloadRequest(module_id=module_id, chunk_size=self.chunk_size)
        info, data = self._call(f"download of {name}", lambda: self._receive(request, name))
        _verify(name, data, sha256 or info.sha256, size_bytes or info.size_bytes)
        return info, data

    def _receive(self, request: registry_pb2.DownloadRequest, name: str) -> tuple[registry_pb2.ModuleInfo, bytes]:
        call = self.stub.Download(request, timeout=self.timeout_s)
        try:
            return self._collect(call, name)
        finally:
            call.cancel()  # no-op once complete; stops the server stream if we bailed out early

    @staticmethod
    def _collect(stream: Iterator[registry_pb2.DownloadReply], name: str) -> tuple[registry_pb2.ModuleInfo, bytes]:
        info, parts, received = None, [], 0
        for reply in stream:
            if reply.WhichOneof("payload") == "info":
                if info is not None:
                    raise RegistryError(f"download of {name}: second ModuleInfo in the stream")
                info = reply.info
                continue
            if info is None:
                raise RegistryError(f"download of {name}: chunk before ModuleInfo")
            if reply.chunk.offset != received:
                raise RegistryError(f"download of {name}: chunk at offset {reply.chunk.offset}, expected {received}")
            received += len(reply.chunk.data)
            if received > min(info.size_bytes or MAX_DOWNLOAD_BYTES, MAX_DOWNLOAD_BYTES):
                raise RegistryError(f"download of {name}: more bytes than announced ({info.size_bytes})")
            parts.append(reply.chunk.data)
        if info is None:
            raise RegistryError(f"download of {name}: empty stream")
        return info, b"".join(parts)


def _verify(name: str, data: bytes, sha256: str, size_bytes: int) -> None:
    if size_bytes and len(data) != size_bytes:
        raise RegistryError(f"{name}: received {len(data)} bytes, expected {size_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256.lower():
        raise RegistryError(f"{name}: sha256 of the received bytes is {digest}, the ref says {sha256}")
