"""LocalStore: the embedded default backend, a plain directory.

Layout under root:
    blobs/ab/abcdef...   content-addressed blobs (sha256 hex)
    docs/<key>           JSON documents
    tmp/                 in-flight writes; same filesystem, so os.replace is atomic
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from coordinator.store.base import (
    DEFAULT_CHUNK_SIZE,
    BlobInfo,
    BlobIntegrityError,
    BlobNotFoundError,
    BlobWriter,
    DiscardingWriter,
    HashingReader,
    ObjectStore,
    check_key,
    check_sha256,
    encode_json,
)
from coordinator.store.direct_io import BlobFile, read_pieces


class LocalStore(ObjectStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self._blobs = self.root / "blobs"
        self._docs = self.root / "docs"
        self._tmp = self.root / "tmp"
        for folder in (self._blobs, self._docs, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # blobs

    def _blob_path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self._blobs / sha256[:2] / sha256

    def put_blob(
        self,
        chunks: Iterable[bytes],
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> BlobInfo:
        if expected_sha256 is not None:
            expected_sha256 = check_sha256(expected_sha256.lower())
        reader = HashingReader(chunks, expected_size)
        with self._temp_file() as (tmp_path, out):
            while piece := reader.read(DEFAULT_CHUNK_SIZE):
                out.write(piece)
            info = reader.verify(expected_sha256, expected_size)
            _flush_to_disk(out)
            final = self._blob_path(info.sha256)
            if not final.exists():  # identical content already there: keep it, drop ours
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp_path, final)
                _fsync_dir(final.parent)
        return info

    def open_writer(self, sha256: str, size: int) -> BlobWriter:
        """Writes straight into tmp/ (no spool, no copy), renamed into blobs/ on commit."""
        final = self._blob_path(check_sha256(sha256.lower()))
        if final.exists():
            return DiscardingWriter(sha256.lower(), size)
        return _LocalWriter(sha256.lower(), size, self._tmp / f"{WRITER_PREFIX}{uuid.uuid4().hex}.part", final)

    def abort_stale_writes(self, before: float) -> int:
        stale = [p for p in self._tmp.glob(f"{WRITER_PREFIX}*.part") if p.stat().st_mtime < before]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def open_blob(self, sha256: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        try:
            return read_pieces(self._blob_path(sha256), chunk_size)
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {sha256}") from None

    def blob_info(self, sha256: str) -> BlobInfo | None:
        try:
            return BlobInfo(sha256, self._blob_path(sha256).stat().st_size)
        except FileNotFoundError:
            return None

    def delete_blob(self, sha256: str) -> None:
        self._blob_path(sha256).unlink(missing_ok=True)

    # documents

    def _doc_path(self, key: str) -> Path:
        return self._docs / check_key(key)

    def put_json(self, key: str, doc: dict) -> None:
        path = self._doc_path(key)
        data = encode_json(doc)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._temp_file() as (tmp_path, out):
            out.write(data)
            _flush_to_disk(out)
            os.replace(tmp_path, path)
        _fsync_dir(path.parent)

    def get_json(self, key: str) -> dict | None:
        try:
            return json.loads(self._doc_path(key).read_bytes())
        except FileNotFoundError:
            return None

    def list_keys(self, prefix: str = "") -> list[str]:
        # Walk only below the deepest folder the prefix names.
        folders = prefix.split("/")[:-1]
        if folders:
            check_key("/".join(folders))  # no '..' escapes
        folder = self._docs.joinpath(*folders)
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self._docs).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def delete_json(self, key: str) -> None:
        self._doc_path(key).unlink(missing_ok=True)

    # helpers

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A fresh file in tmp/ that is removed unless the caller os.replace()d it away."""
        path = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with path.open("xb") as out:
                yield path, out
        finally:
            path.unlink(missing_ok=True)


WRITER_PREFIX = "upload-"  # open_writer's files in tmp/, so stale ones are told from other writes


class _LocalWriter(BlobWriter):
    """Into tmp/ with O_DIRECT where the filesystem has it (direct_io.py says why), renamed on commit."""

    def __init__(self, sha256: str, size: int, path: Path, final: Path) -> None:
        super().__init__(sha256, size)
        self._path, self._final = path, final
        self._out = BlobFile(path)

    def write(self, data: bytes) -> None:
        self._out.write(data)

    def _publish(self, info: BlobInfo) -> None:
        if self._out.size != info.size:
            raise BlobIntegrityError(f"wrote {self._out.size} bytes, the blob has {info.size}")
        self._out.sync()  # durable before the rename publishes it, or a crash could expose zeros
        self._out.close()
        if self._final.exists():  # identical content arrived meanwhile: keep it, drop ours
            self._path.unlink(missing_ok=True)
            return
        self._final.parent.mkdir(exist_ok=True)
        os.replace(self._path, self._final)
        _fsync_dir(self._final.parent)

    def abort(self) -> None:
        self._out.close()
        self._path.unlink(missing_ok=True)


def _flush_to_disk(out: BinaryIO) -> None:
    """Data must be durable before the rename publishes it, or a crash could expose zeros."""
    out.flush()
    os.fsync(out.fileno())


def _fsync_dir(folder: Path) -> None:
    """Makes a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
