"""Blobs larger than one S3 part (5 MiB minimum) stream through multipart uploads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from coordinator.store import BlobIntegrityError, ObjectStore, S3Store

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
