"""An S3 blob written as its bytes arrive: multipart parts uploaded in parallel, memory bounded.

The parts go straight to the blob's final key `blobs/<sha256>`: S3 shows a multipart upload only once
it is completed, and it is completed only on commit, after the registry verified digest, size and
every tensor. Any failure aborts the multipart upload, so S3 keeps no orphaned parts (which it would
otherwise store, and bill, until a lifecycle rule removes them); `S3Store.abort_stale_writes` aborts
those a killed coordinator left. Memory: at most `parallel` parts in flight plus the one filling.
"""
from __future__ import annotations

import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from minio.datatypes import Part

from coordinator.store.base import BlobInfo, BlobIntegrityError, BlobWriter, StoreError

if TYPE_CHECKING:
    from coordinator.store.s3 import S3Store


class S3PartWriter(BlobWriter):
    def __init__(self, store: S3Store, key: str, sha256: str, size: int, parallel: int) -> None:
        super().__init__(sha256, size)
        self._store, self._key = store, key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[Part]] = []
        self._slots = threading.BoundedSemaphore(parallel)
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="s3-part")
        self._written = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self._written += len(data)
        part_size = self._store.part_size
        while len(self._buffer) >= part_size:
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            self._submit(part)

    def _submit(self, part: bytes) -> None:
        self._raise_failed()  # an earlier part failed: stop receiving now
        if self._upload_id is None:
            self._upload_id = self._store._call("start multipart upload", lambda: self._store._client.
                                                _create_multipart_upload(self._store.bucket, self._key, {}))
        self._slots.acquire()  # blocks while `parallel` parts are in flight: the stream waits, memory stays bounded
        future = self._pool.submit(self._upload_part, len(self._parts) + 1, part)
        future.add_done_callback(lambda _: self._slots.release())
        self._parts.append(future)

    def _upload_part(self, number: int, data: bytes) -> Part:
        upload_id = self._upload_id
        assert upload_id is not None
        etag = self._store._call("upload part", lambda: self._store._client._upload_part(
            self._store.bucket, self._key, data, None, upload_id, number))  # retried: the bytes are at hand
        return Part(number, etag)

    def _raise_failed(self) -> None:
        for future in self._parts:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _publish(self, info: BlobInfo) -> None:
        if self._written != info.size:
            raise BlobIntegrityError(f"wrote {self._written} bytes, the blob has {info.size}")
        store, data = self._store, bytes(self._buffer)
        if self._upload_id is None:  # smaller than one part: a single PUT, atomic as well
            store._call("put blob", lambda: store._client.put_object(store.bucket, self._key, io.BytesIO(data),
                                                                     len(data)))
        else:
            if data:
                self._submit(data)  # the last part may be smaller than S3's 5 MiB minimum
            parts = [future.result() for future in self._parts]
            upload_id = self._upload_id
            store._call("complete multipart upload", lambda: store._client._complete_multipart_upload(
                store.bucket, self._key, upload_id, parts))
        self._buffer = bytearray()
        self._pool.shutdown()

    def abort(self) -> None:
        for future in self._parts:
            future.cancel()
        self._pool.shutdown(wait=True)  # parts in flight end first, or they could outlive the abort
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, store, self._upload_id = self._upload_id, self._store, None
            try:
                store._call("abort multipart upload", lambda: store._client._abort_multipart_upload(
                    store.bucket, self._key, upload_id))
            except StoreError:  # best effort; abort_stale_writes catches it later
                pass
