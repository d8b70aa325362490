"""The object-store interface shared by every backend.

Two kinds of things are stored:
  * blobs: immutable bytes (module weights) addressed by their sha256 hex digest;
  * documents: small JSON manifests addressed by a slash-separated key such as
    "modules/<site>/<id>.json" or "nets/<name>/v000003.json".
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from common.patterns import CHUNK_SIZE as DEFAULT_CHUNK_SIZE  # one chunk size, the wire's
from common.patterns import SHA256_HEX as _SHA256_HEX
_KEY_PART = re.compile(r"^[A-Za-z0-9_.@=+-]+$")


class StoreError(Exception):
    """Base class of every store failure."""


class BlobIntegrityError(StoreError):
    """Uploaded bytes did not match the announced sha256 or size; nothing was stored."""


class BlobNotFoundError(StoreError, KeyError):
    """No blob with that sha256 is stored."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "blob not found"


class StoreUnavailableError(StoreError):
    """The backend could not be reached, even after retries."""


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


def check_sha256(sha256: str) -> str:
    """Reject anything but lowercase hex, which also keeps digests safe as paths."""
    if not isinstance(sha256, str) or not _SHA256_HEX.match(sha256):
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
    return sha256


def check_key(key: str) -> str:
    """Reject keys that could escape the store's namespace (absolute, '..', empty parts)."""
    parts = key.split("/") if isinstance(key, str) else []
    if not parts or any(p in ("", ".", "..") or not _KEY_PART.match(p) for p in parts):
        raise ValueError(f"invalid document key: {key!r}")
    return key


class HashingReader:
    """File-like view of a chunk iterator that hashes and counts bytes as they are read.

    Holds at most one chunk plus the caller's read size, so a blob of any size
    streams through bounded memory. Fails early once more bytes than expected arrive.
    """

    def __init__(self, chunks: Iterable[bytes], expected_size: int | None = None) -> None:
        self._chunks = iter(chunks)
        self._pending = bytearray()
        self._expected_size = expected_size
        self._hash = hashlib.sha256()
        self.size = 0
        self.source_error: Exception | None = None

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._pending) < n) and self._pull():
            pass
        if n < 0 or n >= len(self._pending):
            out, self._pending = bytes(self._pending), bytearray()
            return out
        out = bytes(self._pending[:n])
        del self._pending[:n]  # bytearray: no quadratic re-copying of small chunks
        return out

    def _pull(self) -> bool:
        try:
            chunk = next(self._chunks, None)
        except Exception as exc:
            self.source_error = exc  # lets stores re-raise the caller's own error untouched
            raise
        if chunk is None:
            return False
        self.size += len(chunk)
        if self._expected_size is not None and self.size > self._expected_size:
            raise BlobIntegrityError(
                f"blob is larger than the announced {self._expected_size} bytes"
            )
        self._hash.update(chunk)
        self._pending.extend(chunk)
        return True

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def verify(self, expected_sha256: str | None, expected_size: int | None) -> BlobInfo:
        """Returns the blob's identity, or raises if it differs from what was announced."""
        info = BlobInfo(self.hexdigest(), self.size)
        if expected_size is not None and info.size != expected_size:
            raise BlobIntegrityError(
                f"size mismatch: announced {expected_size} bytes, received {info.size}"
            )
        if expected_sha256 is not None and info.sha256 != expected_sha256:
            raise BlobIntegrityError(
                f"sha256 mismatch: announced {expected_sha256}, received {info.sha256}"
            )
        return info


class BlobWriter(ABC):
    """One blob's bytes written as they arrive; visible only after commit(), gone after abort()."""

    def __init__(self, sha256: str, size: int) -> None:
        self.announced, self.committed = BlobInfo(sha256, size), False

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Appends bytes; may block while earlier bytes are still being stored (bounded memory)."""

    @abstractmethod
    def _publish(self, info: BlobInfo) -> None:
        """Makes the written bytes visible as blob `info.sha256`."""

    @abstractmethod
    def abort(self) -> None:
        """Drops what was written; idempotent and quiet (it runs while another error is raised)."""

    def commit(self, info: BlobInfo) -> BlobInfo:
        """Publishes the blob; the caller has verified that `info` is what was written."""
        if info != self.announced:  # the writer was opened under the announced digest: never publish another
            raise BlobIntegrityError(f"blob {info} is not the announced {self.announced}")
        self._publish(info)
        self.committed = True
        return info

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.abort()


class DiscardingWriter(BlobWriter):
    """For a blob already stored: content-addressed, so the bytes are only hashed and checked."""

    def write(self, data: bytes) -> None:
        pass

    def _publish(self, info: BlobInfo) -> None:
        pass

    def abort(self) -> None:
        pass


class ObjectStore(ABC):
    """Content-addressed blobs plus atomically replaced JSON documents."""

    @abstractmethod
    def put_blob(
        self,
        chunks: Iterable[bytes],
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> BlobInfo:
        """Stores the concatenated chunks, streaming with bounded memory.

        The blob becomes visible only after its size and sha256 were verified; on a
        mismatch (BlobIntegrityError) or an exception from `chunks`, nothing is visible.
        Storing identical content again is a no-op returning the same BlobInfo.
        """

    @abstractmethod
    def open_writer(self, sha256: str, size: int) -> BlobWriter:
        """A writer for the blob of announced digest `sha256` and `size`, fed as the bytes arrive.

        The caller verifies digest and size itself (the registry hashes in the same pass) and then
        calls commit(); until then nothing is visible, and abort() (or leaving the `with` block on an
        error) leaves nothing behind. A blob already stored gets a writer that discards the bytes."""

    def abort_stale_writes(self, before: float) -> int:
        """Removes writes left unfinished by a process that died (begun before the time `before`)."""
        return 0

    @abstractmethod
    def open_blob(self, sha256: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Streams a blob's bytes; raises BlobNotFoundError at once if it is missing."""

    @abstractmethod
    def blob_info(self, sha256: str) -> BlobInfo | None:
        """Size of a stored blob, or None if absent."""

    def has_blob(self, sha256: str) -> bool:
        return self.blob_info(sha256) is not None

    @abstractmethod
    def delete_blob(self, sha256: str) -> None:
        """Removes a blob; absent blobs are ignored."""

    @abstractmethod
    def put_json(self, key: str, doc: dict) -> None:
        """Writes a document atomically: readers see the old or the new one, never half."""

    @abstractmethod
    def get_json(self, key: str) -> dict | None:
        """The document at key, or None if absent."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Sorted document keys starting with prefix (a plain string prefix)."""

    @abstractmethod
    def delete_json(self, key: str) -> None:
        """Removes a document; absent keys are ignored."""

    def read_blob(self, sha256: str) -> bytes:
        """Whole blob in memory; for small blobs and tests only."""
        return b"".join(self.open_blob(sha256))


class Store(Protocol):
    """What the coordinator's services use of a store: an ObjectStore, or a wrapper that stands in for
    one by delegating every call (observer.CountingStore). The methods are ObjectStore's."""

    def put_blob(self, chunks: Iterable[bytes], expected_sha256: str | None = None,
                 expected_size: int | None = None) -> BlobInfo: ...

    def open_writer(self, sha256: str, size: int) -> BlobWriter: ...

    def abort_stale_writes(self, before: float) -> int: ...

    def open_blob(self, sha256: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]: ...

    def blob_info(self, sha256: str) -> BlobInfo | None: ...

    def has_blob(self, sha256: str) -> bool: ...

    def delete_blob(self, sha256: str) -> None: ...

    def put_json(self, key: str, doc: dict) -> None: ...

    def get_json(self, key: str) -> dict | None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def delete_json(self, key: str) -> None: ...

    def read_blob(self, sha256: str) -> bytes: ...


def encode_json(doc: dict) -> bytes:
    """Stable encoding, so identical documents are identical bytes."""
    if not isinstance(doc, dict):
        raise TypeError(f"documents must be dicts, got {type(doc).__name__}")
    # allow_nan=False: NaN/Infinity are not JSON and would break non-Python readers.
    return json.dumps(doc, sort_keys=True, indent=1, allow_nan=False).encode("utf-8")
