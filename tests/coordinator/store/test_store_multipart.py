"""Blobs larger than one S3 part (5 MiB minimum) stream through multipart uploads."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from coordinator.store import BlobInfo, BlobIntegrityError, ObjectStore, S3Store
from tests.coordinator.store.conftest import make_s3_store

MIB = 1 << 20


def test_multipart_round_trip_and_failure(store: ObjectStore) -> None:
    if isinstance(store, S3Store):
        store.part_size = 5 * MIB  # smallest part S3 allows: 11 MiB -> 3 parts
    data = os.urandom(11 * MIB)
    digest = hashlib.sha256(data).hexdigest()

    def chunks(stop_after: int | None = None) -> Iterator[bytes]:
        for index, start in enumerate(range(0, len(data), MIB)):
            if index == stop_after:
                raise BlobIntegrityError("stream cut by the test")
            yield data[start : start + MIB]

    with pytest.raises(BlobIntegrityError):
        store.put_blob(chunks(stop_after=7), expected_sha256=digest)  # fails in part 2
    assert not store.has_blob(digest)

    info = store.put_blob(chunks(), expected_sha256=digest, expected_size=len(data))
    assert info.size == len(data)
    assert hashlib.sha256(b"".join(store.open_blob(digest))).hexdigest() == digest


def _open_uploads(store: S3Store) -> list[str]:
    """Multipart uploads S3 holds (and would bill) for the store's bucket."""
    return [u.object_name for u in store._client._list_multipart_uploads(store.bucket, prefix="blobs/").uploads]


def test_writer_parts_upload_in_parallel_with_bounded_memory(s3_endpoint: str) -> None:
    store = make_s3_store(s3_endpoint, part_size=5 * MIB, parallel_parts=2)
    data = os.urandom(23 * MIB)  # 4 full parts + a short last one
    digest = hashlib.sha256(data).hexdigest()
    active, peak, lock = [0], [0], threading.Lock()
    upload_part = store._client._upload_part

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.2)  # slow S3: parts overlap, and the stream must wait rather than buffer more
            return upload_part(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    store._client._upload_part = counting  # type: ignore[method-assign]
    with store.open_writer(digest, len(data)) as writer:
        for start in range(0, len(data), MIB):
            writer.write(data[start:start + MIB])
            in_flight = sum(not f.done() for f in writer._parts)
            assert in_flight <= 2 and len(writer._buffer) < 5 * MIB  # memory: 2 parts in flight + 1 filling
        writer.commit(BlobInfo(digest, len(data)))
    assert peak[0] == 2  # parallel, and never more than allowed
    assert store.read_blob(digest) == data
    assert not _open_uploads(store)


def test_an_interrupted_multipart_upload_is_aborted(s3_endpoint: str) -> None:
    store = make_s3_store(s3_endpoint, part_size=5 * MIB)
    data = os.urandom(12 * MIB)
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(RuntimeError):
        with store.open_writer(digest, len(data)) as writer:
            writer.write(data[:11 * MIB])  # two parts sent
            assert _open_uploads(store) == [f"blobs/{digest}"]
            raise RuntimeError("client gone")
    assert not _open_uploads(store)  # S3 keeps no orphaned parts
    assert not store.has_blob(digest)


def test_multipart_uploads_a_killed_coordinator_left_are_aborted_at_start(s3_endpoint: str) -> None:
    store = make_s3_store(s3_endpoint, part_size=5 * MIB)
    data = os.urandom(11 * MIB)
    writer = store.open_writer(hashlib.sha256(data).hexdigest(), len(data))
    writer.write(data)  # then the process dies: no abort, no commit
    writer._pool.shutdown(wait=True)
    assert len(_open_uploads(store)) == 1
    later = make_s3_store(s3_endpoint)
    later.bucket = store.bucket
    assert later.abort_stale_writes(time.time() + 1) == 1
    assert not _open_uploads(store)
