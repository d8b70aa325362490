"""direct_io: blob files written through one aligned buffer (O_DIRECT where the filesystem has it)."""
from __future__ import annotations

import gc
import hashlib
import os
from pathlib import Path

import pytest

from coordinator.store import direct_io
from coordinator.store.base import BlobInfo
from coordinator.store.direct_io import ALIGN, BUFFER_BYTES, BlobFile, read_pieces
from coordinator.store.local import LocalStore

# sizes around every boundary the aligned buffer has: empty, sub-block, block, buffer and beyond
SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, BUFFER_BYTES - 1, BUFFER_BYTES, 2 * BUFFER_BYTES + 12345]


def _write(path: Path, data: bytes, piece: int) -> BlobFile:
    out = BlobFile(path)
    for start in range(0, len(data), piece):
        out.write(data[start:start + piece])
    out.sync()
    out.close()
    return out


@pytest.mark.parametrize("size", SIZES)
def test_blob_file_holds_exactly_the_bytes_written(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    out = _write(tmp_path / "blob", data, piece=1_000_003)  # pieces that never line up with the blocks
    assert out.size == size
    assert (tmp_path / "blob").read_bytes() == data  # the padded tail was truncated away


@pytest.mark.parametrize("chunk", [1000, ALIGN, 1 << 20])
def test_read_pieces_returns_the_file_in_pieces_of_at_most_chunk(tmp_path: Path, chunk: int) -> None:
    data = os.urandom(BUFFER_BYTES + 777)
    (tmp_path / "blob").write_bytes(data)
    pieces = list(read_pieces(tmp_path / "blob", chunk))
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= chunk


def test_read_pieces_of_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_pieces(tmp_path / "absent", 1 << 20)  # not at the first piece: the caller maps it to NOT_FOUND


def test_without_o_direct_the_buffered_file_behaves_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "_open_direct", lambda path, flags=0: None)  # a filesystem like tmpfs
    data = os.urandom(ALIGN * 3 + 5)
    out = _write(tmp_path / "blob", data, piece=999)
    assert not out.direct
    assert (tmp_path / "blob").read_bytes() == data
    assert b"".join(read_pieces(tmp_path / "blob", 4096)) == data


def test_the_file_is_created_exclusively(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"kept")
    with pytest.raises(FileExistsError):
        BlobFile(tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == b"kept"


def test_local_store_writer_commits_and_aborts_through_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = os.urandom(BUFFER_BYTES + 4097)
    digest = hashlib.sha256(data).hexdigest()
    with store.open_writer(digest, len(data)) as writer:
        writer.write(data[:5000])
        writer.write(data[5000:])
        writer.commit(BlobInfo(digest, len(data)))
    assert b"".join(store.open_blob(digest, 1 << 20)) == data
    other = os.urandom(10_000)
    with store.open_writer(hashlib.sha256(other).hexdigest(), len(other)) as writer:
        writer.write(other)  # never committed: aborted on exit
    assert store.blob_info(hashlib.sha256(other).hexdigest()) is None
    assert not list((tmp_path / "store" / "tmp").iterdir())


def test_pieces_never_read_leave_no_file_open(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(3 * ALIGN))

    def open_on_blob() -> int:  # this process's descriptors on the blob (others come and go in a full run)
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return links.count(str(blob))

    for _ in range(20):
        read_pieces(blob, ALIGN)  # e.g. a Download whose client left before the first chunk
    gc.collect()
    assert open_on_blob() == 0
