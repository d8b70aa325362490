"""The one-pass upload pipeline (coordinator.ingest): hashed, checked and written as chunks arrive.

Against real parts: the RegistryService's own _ingest, a LocalStore, and an S3Store on moto's
S3-protocol server for the multipart path.
"""
from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import torch
from safetensors.torch import save as st_save

from common.errors import DownloadError
from common.registry_client import download
from coordinator.ingest import ingest
from coordinator.registry_service import RegistryService
from coordinator.store import BlobInfo, LocalStore, ObjectStore, S3Store
from coordinator.manifests import list_module_records
from coordinator.validation import UploadLimits, UploadRejected, weights_check
from protos.nt.v1 import chunk_pb2, common_pb2, registry_pb2, registry_pb2_grpc
from tests.coordinator.store.conftest import make_s3_store
from tests.helpers.registry import serve_registry
from tests.helpers.s3server import start_s3_server
from transplant.spec import ModuleSpec
from transplant.spec.builder import SpecBuilder

MIB = 1 << 20
LIMITS = UploadLimits(max_upload_bytes=256 << 20, site_quota_bytes=1 << 30)


def big_task(megabytes: float) -> tuple[str, torch.Tensor]:
    """A task module that is one large linear layer (a spec, and zero weights to fill in)."""
    features, out = 1000, max(1, int(megabytes * MIB) // 4000)
    builder = SpecBuilder("test.big", (10, 10, 10))
    builder.add("flatten", "flatten")
    builder.add("fc", "linear", in_features=features, out_features=out, bias=False)
    return builder.build(max_params=10**9).dumps(), torch.zeros(out, features)


def requests(spec_json: str, data: bytes, chunk: int, pulled: list[int] | None = None,
             sha256: str | None = None) -> Iterator[registry_pb2.UploadRequest]:
    header = registry_pb2.UploadHeader(site_id="site-p", category="3", role=common_pb2.TASK, task="classification",
                                       spec_json=spec_json, sha256=sha256 or hashlib.sha256(data).hexdigest(),
                                       size_bytes=len(data))
    yield registry_pb2.UploadRequest(header=header)
    for offset in range(0, len(data), chunk):
        if pulled is not None:
            pulled.append(offset)
        yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=data[offset:offset + chunk], offset=offset))


def leftovers(store: LocalStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def test_a_valid_upload_is_stored_byte_exact_in_one_pass(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(3)
    data = st_save({"fc.weight": weights.normal_()})
    record = RegistryService(store, LIMITS)._ingest(requests(spec_json, data, 256 << 10))
    assert store.read_blob(record.sha256) == data and record.size_bytes == len(data)
    assert not list((store.root / "tmp").iterdir())  # written straight into the store, nothing left over


def test_nan_in_the_last_chunk_is_refused_and_nothing_is_stored(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(3)
    weights.view(-1)[-1] = float("nan")  # the very last value: only a scan of every byte finds it
    data = st_save({"fc.weight": weights})
    with pytest.raises(UploadRejected, match="'fc.weight' holds NaN or Inf"):
        RegistryService(store, LIMITS)._ingest(requests(spec_json, data, 1 << 20))
    assert leftovers(store) == []
    assert not list_module_records(store)


def test_a_wrong_header_ends_the_stream_before_the_rest_arrives(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(8)
    data = st_save({"fc.weight": torch.zeros(weights.shape[0] + 1, weights.shape[1])})  # one row too many
    pulled: list[int] = []
    with pytest.raises(UploadRejected, match="has shape"):
        RegistryService(store, LIMITS)._ingest(requests(spec_json, data, 64 << 10, pulled))
    assert len(pulled) < 10 < len(data) // (64 << 10)  # refused after a few chunks, not after 128
    assert leftovers(store) == []


def test_peak_memory_is_a_few_chunks_however_large_the_upload(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(48)
    head = st_save({"fc.weight": weights[:0]})  # only to learn the header layout: build it by hand below
    header = head[:8 + int.from_bytes(head[:8], "little")]
    data_size = weights.numel() * 4
    header = header.replace(b"[0,1000]", f"[{weights.shape[0]},1000]".encode()).replace(
        b"[0,0]", f"[0,{data_size}]".encode())
    prefix = (len(header) - 8).to_bytes(8, "little") + header[8:]
    size = len(prefix) + data_size
    zeros = bytes(MIB)
    digest = hashlib.sha256(prefix)
    for _ in range(data_size // MIB):
        digest.update(zeros)
    digest.update(zeros[:data_size % MIB])

    def chunks() -> Iterator[tuple[bytes, int]]:  # made on the fly, never held by the test
        yield prefix, 0
        offset = len(prefix)
        while offset < size:
            piece = bytes(min(MIB, size - offset))
            yield piece, offset
            offset += len(piece)

    check = weights_check("task", ModuleSpec.loads(spec_json), LIMITS, size)
    tracemalloc.start()
    try:
        with store.open_writer(digest.hexdigest(), size) as writer:
            received, _ = ingest(chunks(), size, check, writer)
            writer.commit(received)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == BlobInfo(digest.hexdigest(), size) and size > 45 * MIB
    assert peak < 6 * MIB, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB upload in 1 MiB chunks"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    url, stop = start_s3_server()
    try:
        yield urlparse(url).netloc
    finally:
        stop()


@pytest.fixture(params=["local", "s3"])
def any_store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return make_s3_store(request.getfixturevalue("s3_endpoint"), part_size=5 * MIB)


def test_a_refused_multipart_upload_leaves_no_parts_on_s3(any_store: ObjectStore) -> None:
    spec_json, weights = big_task(12)
    weights.view(-1)[-1] = float("inf")  # found only after two 5 MiB parts went to S3
    data = st_save({"fc.weight": weights})
    with pytest.raises(UploadRejected, match="NaN or Inf"):
        RegistryService(any_store, LIMITS)._ingest(requests(spec_json, data, 1 << 20))
    assert not any_store.has_blob(hashlib.sha256(data).hexdigest())
    if isinstance(any_store, S3Store):
        assert not any_store._client._list_multipart_uploads(any_store.bucket, prefix="blobs/").uploads
    weights.view(-1)[-1] = 0.0
    good = st_save({"fc.weight": weights})  # and the same path stores a valid one, byte-exact
    record = RegistryService(any_store, LIMITS)._ingest(requests(spec_json, good, 1 << 20))
    assert any_store.read_blob(record.sha256) == good


def test_a_sha256_mismatch_is_refused_after_the_last_byte(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(2)
    data = st_save({"fc.weight": weights})
    with pytest.raises(UploadRejected, match="sha256 mismatch"):
        RegistryService(store, LIMITS)._ingest(requests(spec_json, data, 1 << 20, sha256="0" * 64))
    assert leftovers(store) == []


def test_a_large_download_is_hashed_as_it_arrives_and_a_corrupted_blob_refused(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    spec_json, weights = big_task(12)  # above OWN_THREAD_BYTES: hashed on its own thread
    data = st_save({"fc.weight": weights.normal_()})
    record = RegistryService(store, LIMITS)._ingest(requests(spec_json, data, 1 << 20))
    server, channel = serve_registry(RegistryService(store, LIMITS))
    try:
        stub = registry_pb2_grpc.ModuleRegistryStub(channel)
        assert download(stub, record.module_id)[1] == data
        blob = store.root / "blobs" / record.sha256[:2] / record.sha256
        corrupted = bytearray(data)
        corrupted[-1] ^= 1  # the very last byte
        blob.write_bytes(bytes(corrupted))
        with pytest.raises(DownloadError, match="sha256 of the received bytes"):
            download(stub, record.module_id)
    finally:
        channel.close()
        server.stop(0)


def test_a_restarted_registry_removes_the_partial_upload_a_killed_one_left(tmp_path) -> None:
    store = LocalStore(tmp_path / "store")
    writer = store.open_writer("a" * 64, 10)
    writer.write(b"12345")  # then the coordinator is SIGKILLed: no abort, no commit
    (partial,) = (store.root / "tmp").iterdir()
    other = store.root / "tmp" / "0123abcd.part"  # another write of the store in flight (put_json's name)
    other.write_bytes(b"{}")
    RegistryService(LocalStore(tmp_path / "store"), LIMITS)
    assert not partial.exists() and other.exists()
