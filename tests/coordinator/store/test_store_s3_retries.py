"""S3Store retries transient failures a bounded number of times; open_store URL parsing."""

from __future__ import annotations

import socket
import time

import pytest
import urllib3
from minio.error import ServerError

from coordinator.store import RetryPolicy, S3Store, StoreError, StoreUnavailableError, open_store
from coordinator.store.local import LocalStore


def closed_port() -> int:
    """A port nothing listens on: bound, read, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_after_configured_attempts() -> None:
    delays: list[float] = []
    retry = RetryPolicy(attempts=3, base_delay=0.001, sleep=delays.append)
    store = S3Store(f"127.0.0.1:{closed_port()}", "k", "s", "bucket", retry=retry, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="after 3 attempt"):
        store.get_json("a/b.json")
    assert delays == [0.001, 0.002]  # exponential backoff between the 3 attempts
    assert time.monotonic() - started < 5


def test_backoff_is_capped() -> None:
    retry = RetryPolicy(attempts=10, base_delay=1.0, max_delay=3.0)
    assert [retry.delay(k) for k in range(1, 5)] == [1.0, 2.0, 3.0, 3.0]


def test_open_store_urls(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(str(tmp_path / "plain")), LocalStore)
    local = open_store(f"local://{tmp_path / 'url'}")
    assert isinstance(local, LocalStore) and local.root == tmp_path / "url"

    monkeypatch.setenv("TRANSPLANT_S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("TRANSPLANT_S3_SECRET_KEY", "sk")
    s3 = open_store("s3://models?endpoint=127.0.0.1:9000&secure=0&attempts=2&base_delay=0.01")
    assert isinstance(s3, S3Store) and s3.bucket == "models" and s3.retry.attempts == 2

    monkeypatch.delenv("TRANSPLANT_S3_ACCESS_KEY")
    with pytest.raises(ValueError, match="credentials"):
        open_store("s3://models?endpoint=127.0.0.1:9000")
    with pytest.raises(ValueError, match="endpoint"):
        open_store("s3://models")
    with pytest.raises(ValueError, match="scheme"):
        open_store("ftp://host/x")


def test_transient_failures_are_retried_then_succeed() -> None:
    delays: list[float] = []
    store = S3Store("127.0.0.1:1", "k", "s", "bucket",
                    retry=RetryPolicy(attempts=4, base_delay=0.01, sleep=delays.append))
    failures = [ServerError("slow down", 503), urllib3.exceptions.ProtocolError("reset")]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert store._call("flaky op", flaky) == "ok"
    assert delays == [0.01, 0.02]


def test_permanent_failures_are_not_retried() -> None:
    delays: list[float] = []
    store = S3Store("127.0.0.1:1", "k", "s", "bucket",
                    retry=RetryPolicy(attempts=4, base_delay=0.01, sleep=delays.append))
    with pytest.raises(StoreError, match="forbidden"):
        store._call("op", lambda: (_ for _ in ()).throw(ServerError("forbidden", 403)))
    assert delays == []
