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


def test_put_verified_file_stores_the_file_without_keeping_a_tie_to_it(store: ObjectStore, tmp_path) -> None:
    data = os.urandom(3 * CHUNK + 11)
    path = tmp_path / "spooled"
    path.write_bytes(data)
    info = store.put_verified_file(path, sha(data), len(data))
    assert info == BlobInfo(sha(data), len(data))
    path.unlink()  # the spool file goes away after an upload: the blob must not
    assert b"".join(store.open_blob(sha(data))) == data
    assert store.put_verified_file(tmp_path / "missing-but-stored", sha(data), len(data)) == info  # idempotent


def test_put_verified_file_refuses_a_size_mismatch(store: ObjectStore, tmp_path) -> None:
    path = tmp_path / "spooled"
    path.write_bytes(b"abc")
    with pytest.raises(BlobIntegrityError):
        store.put_verified_file(path, sha(b"abc"), 4)
    assert not store.has_blob(sha(b"abc"))
