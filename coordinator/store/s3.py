"""S3Store: any S3-protocol server (MinIO, Ceph, AWS, moto), spoken to only via minio.Minio.

Layout in the bucket:
    blobs/<sha256>   content-addressed blobs
    docs/<key>       JSON documents (a single PUT is atomic in S3)
    tmp/<uuid>       blob uploads in flight; copied to blobs/ only once verified
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeVar, overload

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from coordinator.store.base import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    BlobNotFoundError,
    BlobWriter,
    DiscardingWriter,
    HashingReader,
    ObjectStore,
    StoreError,
    StoreUnavailableError,
    check_key,
    check_sha256,
    encode_json,
)
from coordinator.store.s3_parts import S3PartWriter

T = TypeVar("T")

BLOBS, DOCS, TMP = "blobs/", "docs/", "tmp/"
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "ResourceNotFound"}
_BUCKET_EXISTS_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: attempt k (from 1) waits base_delay * 2**(k-1) after failing."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1))


def is_transient(exc: BaseException) -> bool:
    """Connection trouble and 5xx replies are worth retrying; 4xx replies are not."""
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES or exc.response.status >= 500
    if isinstance(exc, InvalidResponseError):  # e.g. an HTML 502 page from a proxy
        return getattr(exc, "_code", 0) >= 500
    return False


class S3Store(ObjectStore):
    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        *,
        retry: RetryPolicy = RetryPolicy(),
        part_size: int = 8 << 20,
        parallel_parts: int = 4,
        timeout_s: float = 30.0,
    ) -> None:
        self.endpoint, self.bucket, self.retry = endpoint, bucket, retry
        # a part is held in memory until S3 has it; 5 MiB is S3's minimum part size.
        self.part_size, self.parallel_parts = max(part_size, 5 << 20), max(1, parallel_parts)
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_http_client(secure, timeout_s, self.parallel_parts),
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(endpoint={self.endpoint!r}, bucket={self.bucket!r})"

    # blobs

    def put_blob(
        self,
        chunks: Iterable[bytes],
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> BlobInfo:
        if expected_sha256 is not None:
            expected_sha256 = check_sha256(expected_sha256.lower())
        self._ensure_bucket()
        reader = HashingReader(chunks, expected_size)
        tmp_key = f"{TMP}{uuid.uuid4().hex}"
        try:
            self._upload_stream(tmp_key, reader)
            info = reader.verify(expected_sha256, expected_size)
            if self.blob_info(info.sha256) is None:  # identical content is already visible
                source = CopySource(self.bucket, tmp_key)
                self._call("publish blob", lambda: self._client.copy_object(
                    self.bucket, BLOBS + info.sha256, source))
        finally:
            self._remove_quietly(tmp_key)
        return info

    def _upload_stream(self, key: str, reader: HashingReader) -> None:
        """One attempt only: the chunk iterator cannot be replayed."""
        try:
            self._client.put_object(
                self.bucket, key,
                reader,  # type: ignore[arg-type]  # minio annotates BinaryIO but needs only a callable read()
                length=-1, part_size=self.part_size, num_parallel_uploads=1,  # one part in memory
            )
        except Exception as exc:
            if exc is reader.source_error:
                raise
            self._raise_translated("upload blob", exc, attempts=1)

    def open_writer(self, sha256: str, size: int) -> BlobWriter:
        """Parts uploaded in parallel as the bytes arrive, completed on commit (coordinator.store.s3_parts)."""
        sha256 = check_sha256(sha256.lower())
        if self.blob_info(sha256) is not None:
            return DiscardingWriter(sha256, size)
        return S3PartWriter(self, BLOBS + sha256, sha256, size, self.parallel_parts)

    def abort_stale_writes(self, before: float) -> int:
        """Aborts multipart uploads of blobs begun before `before` (a killed coordinator's); their count."""
        self._ensure_bucket()
        result = self._call("list multipart uploads", lambda: self._client._list_multipart_uploads(
            self.bucket, prefix=BLOBS, max_uploads=1000))
        stale = [u for u in result.uploads if u.initiated_time is None or u.initiated_time.timestamp() < before]
        for upload in stale:
            upload_id = upload.upload_id or ""
            self._call("abort multipart upload", lambda: self._client._abort_multipart_upload(
                self.bucket, upload.object_name, upload_id))
        return len(stale)

    def open_blob(self, sha256: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        key = BLOBS + check_sha256(sha256)
        self._ensure_bucket()
        response = self._call("get blob", lambda: self._client.get_object(self.bucket, key),
                              missing_ok=True)
        if response is None:
            raise BlobNotFoundError(f"no blob {sha256}")
        return self._stream(response, chunk_size)

    def _stream(self, response: urllib3.BaseHTTPResponse, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
            self._raise_translated("read blob", exc, attempts=1)
        finally:
            response.close()
            response.release_conn()

    def blob_info(self, sha256: str) -> BlobInfo | None:
        key = BLOBS + check_sha256(sha256)
        self._ensure_bucket()
        stat = self._call("stat blob", lambda: self._client.stat_object(self.bucket, key),
                          missing_ok=True)
        return None if stat is None else BlobInfo(sha256, int(stat.size or 0))

    def delete_blob(self, sha256: str) -> None:
        key = BLOBS + check_sha256(sha256)
        self._ensure_bucket()
        self._call("delete blob", lambda: self._client.remove_object(self.bucket, key))

    # documents

    def put_json(self, key: str, doc: dict) -> None:
        object_name, data = DOCS + check_key(key), encode_json(doc)
        self._ensure_bucket()
        self._call("put json", lambda: self._client.put_object(
            self.bucket, object_name, io.BytesIO(data), len(data),
            content_type="application/json"))

    def get_json(self, key: str) -> dict | None:
        object_name = DOCS + check_key(key)
        self._ensure_bucket()
        data = self._call("get json", lambda: self._read_object(object_name), missing_ok=True)
        return None if data is None else json.loads(data)

    def _read_object(self, object_name: str) -> bytes:
        response = self._client.get_object(self.bucket, object_name)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def list_keys(self, prefix: str = "") -> list[str]:
        self._ensure_bucket()
        names = self._call("list keys", lambda: [
            obj.object_name
            for obj in self._client.list_objects(self.bucket, prefix=DOCS + prefix, recursive=True)
        ])
        return sorted(name[len(DOCS):] for name in names if name)

    def delete_json(self, key: str) -> None:
        object_name = DOCS + check_key(key)
        self._ensure_bucket()
        self._call("delete json", lambda: self._client.remove_object(self.bucket, object_name))

    # plumbing

    def _ensure_bucket(self) -> None:
        """Creates the bucket on first use, so constructing a store never touches the network."""
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if not self._bucket_ready:
                if not self._call("check bucket", lambda: self._client.bucket_exists(self.bucket)):
                    self._call("create bucket", self._make_bucket)
                self._bucket_ready = True

    def _make_bucket(self) -> None:
        try:
            self._client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in _BUCKET_EXISTS_CODES:  # another process won the race: fine
                raise

    @overload
    def _call(self, what: str, fn: Callable[[], T], missing_ok: Literal[False] = False) -> T: ...

    @overload
    def _call(self, what: str, fn: Callable[[], T], missing_ok: bool) -> T | None: ...

    def _call(self, what: str, fn: Callable[[], T], missing_ok: bool = False) -> T | None:
        """Runs fn with bounded retries on transient failures; maps errors to StoreError."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified just below
                if missing_ok and isinstance(exc, S3Error) and exc.code in _MISSING_CODES:
                    return None
                if not is_transient(exc) or attempt == self.retry.attempts:
                    self._raise_translated(what, exc, attempts=attempt)
                self.retry.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: RetryPolicy.attempts must be >= 1")

    def _raise_translated(self, what: str, exc: Exception, attempts: int) -> NoReturn:
        """Re-raises exc as a StoreError so callers never depend on minio's exceptions."""
        if is_transient(exc):
            raise StoreUnavailableError(
                f"S3 {what} failed: {self.endpoint} (bucket {self.bucket!r}) unavailable "
                f"after {attempts} attempt(s): {exc}"
            ) from exc
        if isinstance(exc, MinioException):
            raise StoreError(f"S3 {what} failed on {self.endpoint}/{self.bucket}: {exc}") from exc
        raise exc  # already a StoreError (e.g. BlobIntegrityError) or a programming error

    def _remove_quietly(self, key: str) -> None:
        """Best effort: a leftover tmp/ object is invisible, so it must not mask the real error."""
        try:
            self._call("remove temp object", lambda: self._client.remove_object(self.bucket, key))
        except StoreError:
            pass


def _http_client(secure: bool, timeout_s: float, parallel_parts: int) -> urllib3.PoolManager:
    """No urllib3-level retries: RetryPolicy alone decides, so attempts are predictable."""
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED",
                           "ca_certs": os.environ.get("SSL_CERT_FILE") or certifi.where()} if secure else {}
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout_s, 10.0), read=timeout_s),
        retries=False,
        maxsize=max(10, 2 * parallel_parts),  # parallel part uploads each hold a connection
        **tls,
    )
