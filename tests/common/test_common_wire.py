"""The shared wire layer: names and digests, addresses, the download checks every client gets, samples files."""
from __future__ import annotations

import hashlib

import pytest
import torch

from common.errors import AddressError, DownloadError, RegistryError
from common.patterns import NAME, SHA256_HEX, check_target, is_name, is_sha256
from common.registry_client import collect, download, verify
from common.samples import SAMPLES_FORMAT, samples_from_bytes, samples_spec, samples_to_bytes
from protos.nt.v1 import chunk_pb2, registry_pb2

DATA = b"0123456789" * 5


def test_names_and_digests() -> None:
    for good in ("site-3", "a", "acme.example", "A_b-c.d", "x" * 64):
        assert is_name(good), good
    for bad in ("", ".", "..", "-a", "_a", "a/b", "a b", "x" * 65, "site\n", "é"):
        assert not is_name(bad), bad
    assert is_sha256(hashlib.sha256(b"").hexdigest())
    for bad in ("0" * 63, "0" * 65, "A" * 64, "0" * 64 + "\n", ""):
        assert not is_sha256(bad), bad
    assert NAME.match("site\n") is None and SHA256_HEX.match("0" * 64 + "\n") is None  # \Z, not $


def test_check_target() -> None:
    assert check_target("127.0.0.1:50051") == "127.0.0.1:50051"
    for bad in ("localhost", ":1", "host:", "host:port"):
        with pytest.raises(AddressError, match="HOST:PORT"):
            check_target(bad)


def _info(size: int = len(DATA), sha256: str = hashlib.sha256(DATA).hexdigest()) -> registry_pb2.DownloadReply:
    return registry_pb2.DownloadReply(info=registry_pb2.ModuleInfo(module_id="m", size_bytes=size, sha256=sha256))


def _chunk(offset: int, data: bytes) -> registry_pb2.DownloadReply:
    return registry_pb2.DownloadReply(chunk=chunk_pb2.Chunk(offset=offset, data=data))


def test_collect_accepts_a_well_formed_stream() -> None:
    info, data = collect([_info(), _chunk(0, DATA[:20]), _chunk(20, DATA[20:])], "m")
    assert data == DATA and info.module_id == "m"


def test_collect_writes_the_chunks_into_one_buffer() -> None:
    """With the size announced, the chunks go straight into one buffer (no list of chunks joined at the end);
    a stream that ends short returns what arrived, for verify() to refuse."""
    info, data = collect([_info(), _chunk(0, DATA[:20]), _chunk(20, DATA[20:])], "m", hashlib.sha256())
    assert isinstance(data, bytearray) and data == DATA
    _, short = collect([_info(), _chunk(0, DATA[:20])], "m")
    assert short == DATA[:20]
    with pytest.raises(DownloadError, match="received 20 bytes, expected 50"):
        verify("m", short, info.sha256, info.size_bytes)
    with pytest.raises(DownloadError, match="announces 1073741824 bytes, the ref says 50"):  # nothing allocated
        collect([_info(size=1 << 30), _chunk(0, DATA)], "m", size_bytes=len(DATA))


@pytest.mark.parametrize("stream, problem", [
    ([], "empty stream"),
    ([_chunk(0, DATA)], "chunk before ModuleInfo"),
    ([_info(), _info(), _chunk(0, DATA)], "second ModuleInfo"),
    ([_info(), _chunk(0, DATA[:20]), _chunk(25, DATA[20:])], "offset 25, expected 20"),
    ([_info(size=10), _chunk(0, DATA)], "more bytes than announced"),
])
def test_collect_refuses_a_misbehaving_stream(stream: list, problem: str) -> None:
    with pytest.raises(DownloadError, match=problem) as err:
        collect(stream, "m")
    assert isinstance(err.value, RegistryError) and err.value.code is None  # our check, not a gRPC status


def test_verify_checks_size_and_digest() -> None:
    verify("m", DATA, hashlib.sha256(DATA).hexdigest(), len(DATA))
    with pytest.raises(DownloadError, match="received 50 bytes, expected 49"):
        verify("m", DATA, "", 49)
    with pytest.raises(DownloadError, match="sha256"):
        verify("m", DATA, "0" * 64, 0)


class _Call(list):
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Stub:
    """A ModuleRegistry stub whose Download answers with a fixed stream."""

    def __init__(self, replies: list) -> None:
        self.call = _Call(replies)

    def Download(self, request: registry_pb2.DownloadRequest, timeout: float) -> _Call:
        return self.call


def test_download_checks_announced_and_ref_digests() -> None:
    stub = _Stub([_info(), _chunk(0, DATA)])
    assert download(stub, "m")[1] == DATA and stub.call.cancelled
    with pytest.raises(DownloadError, match="the ref says"):
        download(_Stub([_info(), _chunk(0, DATA)]), "m", sha256="1" * 64)
    with pytest.raises(DownloadError, match="sha256"):  # the announced digest, when no ref is given
        download(_Stub([_info(sha256="2" * 64), _chunk(0, DATA)]), "m")
    stub = _Stub([_info(size=10), _chunk(0, DATA)])
    with pytest.raises(DownloadError, match="more bytes than announced"):
        download(stub, "m")
    assert stub.call.cancelled  # the server stream is stopped when we bail out early


def test_samples_round_trip() -> None:
    images, labels, masks = torch.rand(3, 1, 4, 4), torch.tensor([1, 0, 1]), torch.zeros(3, 4, 4, dtype=torch.long)
    back = samples_from_bytes(samples_to_bytes(images, labels, masks))
    assert torch.equal(back[0], images) and torch.equal(back[1], labels) and torch.equal(back[2], masks)
    assert samples_from_bytes(samples_to_bytes(images, labels))[2] is None
    spec = samples_spec(images, labels, masks)
    assert spec == {"format": SAMPLES_FORMAT, "num_samples": 3, "image_shape": [1, 4, 4], "has_masks": True,
                    "positives": 2}
    with pytest.raises(ValueError, match="not a valid samples file"):
        samples_from_bytes(b"junk")
