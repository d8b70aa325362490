"""The `store` fixture runs every test against both backends: LocalStore and S3Store
talking to a real S3-protocol server (moto_server) on loopback through minio."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from coordinator.store import LocalStore, ObjectStore, RetryPolicy, S3Store
from tests.helpers.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, start_s3_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """host:port of a moto_server shared by the whole session."""
    url, stop = start_s3_server()
    try:
        yield urlparse(url).netloc
    finally:
        stop()


def make_s3_store(endpoint: str, **kwargs: object) -> S3Store:
    """A fresh bucket per store keeps tests independent on the shared server."""
    kwargs.setdefault("retry", RetryPolicy(attempts=2, base_delay=0.01))
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    return S3Store(endpoint, TEST_ACCESS_KEY, TEST_SECRET_KEY, bucket, **kwargs)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return make_s3_store(request.getfixturevalue("s3_endpoint"))
