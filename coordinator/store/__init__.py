"""Object storage for modules and manifests: one interface, two backends.

    store = open_store("local:///var/lib/transplant")          # embedded default
    store = open_store("s3://modules?endpoint=minio:9000&secure=0")  # S3 protocol
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from coordinator.store.base import (
    BlobInfo,
    BlobIntegrityError,
    BlobNotFoundError,
    BlobWriter,
    ObjectStore,
    Store,
    StoreError,
    StoreUnavailableError,
)
from coordinator.store.local import LocalStore
from coordinator.store.s3 import RetryPolicy, S3Store

__all__ = [
    "BlobInfo",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobWriter",
    "LocalStore",
    "ObjectStore",
    "RetryPolicy",
    "S3Store",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "open_store",
]

ACCESS_KEY_ENV = "TRANSPLANT_S3_ACCESS_KEY"
SECRET_KEY_ENV = "TRANSPLANT_S3_SECRET_KEY"
_FALSE = {"0", "false", "no", "off"}


def open_store(url: str) -> ObjectStore:
    """Store for a URL: `local:///abs/path`, a plain path, or
    `s3://bucket?endpoint=host:port&secure=0[&region=..][&attempts=5&base_delay=0.2]`.

    S3 credentials come from $TRANSPLANT_S3_ACCESS_KEY / $TRANSPLANT_S3_SECRET_KEY, or
    from access_key/secret_key query parameters (meant for tests: URLs end up in logs).
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "local", "file"):
        return LocalStore(Path(unquote(parsed.path) if parsed.scheme else url))
    if parsed.scheme == "s3":
        return _open_s3(parsed.netloc, {k: v[-1] for k, v in parse_qs(parsed.query).items()})
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r} in {url!r}")


def _open_s3(bucket: str, query: dict[str, str]) -> S3Store:
    if not bucket or "endpoint" not in query:
        raise ValueError("S3 store URLs look like s3://bucket?endpoint=host:port&secure=0")
    access_key = query.get("access_key") or os.environ.get(ACCESS_KEY_ENV)
    secret_key = query.get("secret_key") or os.environ.get(SECRET_KEY_ENV)
    if not access_key or not secret_key:
        raise ValueError(f"S3 credentials missing: set ${ACCESS_KEY_ENV} and ${SECRET_KEY_ENV}")
    defaults = RetryPolicy()
    retry = RetryPolicy(
        attempts=int(query.get("attempts", defaults.attempts)),
        base_delay=float(query.get("base_delay", defaults.base_delay)),
    )
    return S3Store(
        query["endpoint"],
        access_key,
        secret_key,
        bucket,
        secure=query.get("secure", "0").lower() not in _FALSE,
        region=query.get("region"),
        retry=retry,
    )
