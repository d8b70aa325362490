"""The worker's content-addressed blob cache: a module already fetched is not fetched again."""
from __future__ import annotations

from coordinator.blobcache import BlobCache


def test_a_blob_is_loaded_once_and_the_least_recently_used_goes_first() -> None:
    reads: list[str] = []

    def load(sha: str) -> bytes:
        reads.append(sha)
        return sha.encode() * 10  # 10 bytes per letter

    cache = BlobCache(max_bytes=25)
    assert cache.get("a", load) == b"a" * 10 and cache.get("a", load) == b"a" * 10
    assert reads == ["a"] and (cache.hits, cache.misses) == (1, 1)
    cache.get("b", load)
    cache.get("a", load)          # a is now the most recently used
    cache.get("c", load)          # 30 bytes > 25: b goes
    assert len(cache) == 2
    cache.get("a", load)
    cache.get("b", load)
    assert reads == ["a", "b", "c", "b"]


def test_a_blob_larger_than_the_cache_is_served_but_not_kept() -> None:
    cache = BlobCache(max_bytes=5)
    assert cache.get("x", lambda s: b"0123456789") == b"0123456789" and len(cache) == 0
