"""Blob behaviour every ObjectStore backend must share."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from coordinator.store import (
    BlobInfo,
    BlobIntegrityError,
    BlobNotFoundError,
    LocalStore,
    ObjectStore,
    S3Store,
)

CHUNK = 64 << 10


def chunked(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftover_temp_objects(store: ObjectStore) -> list[str]:
    """Peeks at backend internals: failed uploads must not leak temporary objects."""
    if isinstance(store, LocalStore):
        return [p.name for p in (store.root / "tmp").iterdir()]
    assert isinstance(store, S3Store)
    return [o.object_name for o in store._client.list_objects(store.bucket, recursive=True)]


def assert_nothing_visible(store: ObjectStore, *digests: str) -> None:
    for digest in digests:
        assert not store.has_blob(digest)
    assert store.list_keys("") == []
    assert leftover_temp_objects(store) == []


def test_multi_chunk_round_trip(store: ObjectStore) -> None:
    data = os.urandom(5 * CHUNK + 123)  # > 3 chunks, with a short last one
    info = store.put_blob(chunked(data), expected_sha256=sha(data), expected_size=len(data))
    assert info == BlobInfo(sha(data), len(data))
    assert store.blob_info(info.sha256) == info
    pieces = list(store.open_blob(info.sha256, chunk_size=CHUNK))
    assert len(pieces) > 3 and b"".join(pieces) == data


def test_put_without_expectations_computes_identity(store: ObjectStore) -> None:
    info = store.put_blob([b"abc", b"", b"def"])
    assert info == BlobInfo(sha(b"abcdef"), 6)
    assert store.read_blob(info.sha256) == b"abcdef"


def test_empty_blob(store: ObjectStore) -> None:
    info = store.put_blob([], expected_sha256=sha(b""), expected_size=0)
    assert store.read_blob(info.sha256) == b""


def test_put_is_idempotent(store: ObjectStore) -> None:
    data = os.urandom(3 * CHUNK)
    first = store.put_blob(chunked(data), expected_sha256=sha(data))
    second = store.put_blob(chunked(data), expected_sha256=sha(data))
    assert first == second
    assert store.read_blob(first.sha256) == data


def test_sha_mismatch_leaves_nothing(store: ObjectStore) -> None:
    data, claimed = os.urandom(4 * CHUNK), sha(b"something else")
    with pytest.raises(BlobIntegrityError, match="sha256"):
        store.put_blob(chunked(data), expected_sha256=claimed, expected_size=len(data))
    assert_nothing_visible(store, claimed, sha(data))


def test_truncated_upload_leaves_nothing(store: ObjectStore) -> None:
    data = os.urandom(4 * CHUNK)
    truncated = data[: 3 * CHUNK]
    with pytest.raises(BlobIntegrityError, match="size"):
        store.put_blob(chunked(truncated), expected_sha256=sha(data), expected_size=len(data))
    assert_nothing_visible(store, sha(data), sha(truncated))


def test_oversized_upload_is_refused(store: ObjectStore) -> None:
    data = os.urandom(4 * CHUNK)
    with pytest.raises(BlobIntegrityError, match="larger"):
        store.put_blob(chunked(data), expected_size=len(data) - 1)
    assert_nothing_visible(store, sha(data))


def test_iterator_failure_midway_leaves_nothing(store: ObjectStore) -> None:
    data = os.urandom(4 * CHUNK)

    def failing_chunks() -> Iterator[bytes]:
        yield from list(chunked(data))[:2]
        raise ConnectionAbortedError("client went away")

    with pytest.raises(ConnectionAbortedError):
        store.put_blob(failing_chunks(), expected_sha256=sha(data))
    assert_nothing_visible(store, sha(data))


def test_missing_blob(store: ObjectStore) -> None:
    missing = sha(b"never stored")
    assert store.blob_info(missing) is None and not store.has_blob(missing)
    with pytest.raises(BlobNotFoundError):
        store.open_blob(missing)
    store.delete_blob(missing)  # absent: ignored


def test_delete_blob(store: ObjectStore) -> None:
    info = store.put_blob([b"to delete"])
    store.delete_blob(info.sha256)
    assert not store.has_blob(info.sha256)


def test_rejects_malformed_digests(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.blob_info("../../etc/passwd")
    with pytest.raises(ValueError):
        store.put_blob([b"x"], expected_sha256="not-hex")


def test_a_writer_publishes_only_on_commit_and_only_the_announced_blob(store: ObjectStore) -> None:
    data = os.urandom(3 * CHUNK + 11)
    with store.open_writer(sha(data), len(data)) as writer:
        for piece in chunked(data):
            writer.write(piece)
        assert not store.has_blob(sha(data))  # written, not yet committed: invisible
        with pytest.raises(BlobIntegrityError):
            writer.commit(BlobInfo(sha(b"other"), len(data)))  # never under another digest
        assert writer.commit(BlobInfo(sha(data), len(data))) == BlobInfo(sha(data), len(data))
    assert b"".join(store.open_blob(sha(data))) == data
    with store.open_writer(sha(data), len(data)) as again:  # already stored: the bytes are discarded
        again.write(data)
        again.commit(BlobInfo(sha(data), len(data)))
    assert store.read_blob(sha(data)) == data


def test_a_writer_left_on_an_error_leaves_nothing(store: ObjectStore) -> None:
    data = os.urandom(2 * CHUNK)
    with pytest.raises(RuntimeError):
        with store.open_writer(sha(data), len(data)) as writer:
            writer.write(data[:CHUNK])
            raise RuntimeError("the stream broke")
    assert not store.has_blob(sha(data))
    if isinstance(store, LocalStore):
        assert not list((store.root / "tmp").iterdir())
    with pytest.raises(BlobIntegrityError):  # a short write is refused even if the caller says otherwise
        with store.open_writer(sha(data), len(data)) as writer:
            writer.write(data[:CHUNK])
            writer.commit(BlobInfo(sha(data), len(data)))
    assert not store.has_blob(sha(data))
