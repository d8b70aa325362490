"""One pass over an upload's bytes: hashed, checked and written as the chunks arrive.

The gRPC thread receives each chunk and checks its offset; three stages (common.stages) take the very
same bytes object in turn: sha256 (hashlib releases the GIL), the tensor check (numpy releases it) and the
store's writer (file or S3 parts). Each stage's queue holds one chunk, so a slow stage holds the
stream back instead of letting chunks pile up: memory stays at a few chunks plus what the store
buffers. No byte is read twice, and nothing becomes visible before the last check passed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

from common.stages import Stage
from coordinator.store import BlobInfo, BlobWriter
from coordinator.validation import UploadRejected
from transplant.spec.tensorcheck import Header, StreamCheck, WeightsError


def ingest(chunks: Iterable[tuple[bytes, int]], size: int, check: StreamCheck, writer: BlobWriter) -> tuple[
        BlobInfo, Header]:
    """Feeds (data, offset) chunks through hash, check and write; returns what arrived and its tensor header.
    Raises UploadRejected for a misbehaving stream or bad content (the writer is then left to abort)."""
    digest = hashlib.sha256()
    stages = [Stage("sha256", digest.update), Stage("check", check.feed), Stage("write", writer.write)]
    received = 0
    try:
        for data, offset in chunks:
            if offset != received:
                raise UploadRejected(f"chunk at offset {offset} arrived, expected offset {received} "
                                     "(lost or reordered chunk)")
            received += len(data)
            if received > size:
                raise UploadRejected(f"upload is larger than the declared {size} bytes")
            _raise_first(stages)  # a bad tensor ends the stream now, not after the last byte
            for stage in stages:
                stage.put(data)
    finally:
        for stage in stages:
            stage.close()
    _raise_first(stages)
    if received != size:
        raise UploadRejected(f"truncated upload: declared {size} bytes, received {received}")
    return BlobInfo(digest.hexdigest(), received), _finish(check)


def _raise_first(stages: list[Stage]) -> None:
    for stage in stages:
        if stage.error is not None:
            if isinstance(stage.error, WeightsError):
                raise UploadRejected(str(stage.error)) from None
            raise stage.error


def _finish(check: StreamCheck) -> Header:
    try:
        return check.finish()
    except WeightsError as exc:
        raise UploadRejected(str(exc)) from None
