"""Bearer tokens on the wire: every RPC carries `authorization: Bearer <token>` in its metadata.

The client side reads a token (a file's first line, else an environment variable) and attaches it
to every call; both servers parse it back with `bearer_token`. Only a token's sha256 is ever stored.
"""
from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

METADATA_KEY = "authorization"
SCHEME = "Bearer"
MAX_TOKEN_CHARS = 512
SITE_TOKEN_ENV = "TRANSPLANT_SITE_TOKEN"
ADMIN_TOKEN_ENV = "TRANSPLANT_ADMIN_TOKEN"
CLIENT_TOKEN_ENV = "TRANSPLANT_CLIENT_TOKEN"  # end users of the Predict service
COORDINATOR_TOKEN_SHA256_ENV = "TRANSPLANT_COORDINATOR_TOKEN_SHA256"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_file(path: Path | str, what: str) -> bytes:
    """The file's bytes; ValueError naming `what` if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_token(token_file: Path | str | None = None, env: str | None = None) -> str | None:
    """A token from a file (first line) or else from the environment variable `env`; None if neither."""
    if token_file:
        token = read_file(token_file, "token file").decode("utf-8", "replace").strip()
        if not token:
            raise ValueError(f"token file {token_file} is empty")
        return token
    token = os.environ.get(env, "").strip() if env else ""
    return token or None


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of `authorization: Bearer <token>` in invocation metadata, or None."""
    for key, value in metadata or ():
        if key.lower() == METADATA_KEY:
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            scheme, _, token = value.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == SCHEME.lower() and token and len(token) <= MAX_TOKEN_CHARS:
                return token
            return None
    return None


class _CallDetails(collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                          "wait_for_ready", "compression")),
                   grpc.ClientCallDetails):
    pass


class BearerTokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (works on plaintext channels too)."""

    def __init__(self, token: str) -> None:
        self._header = (METADATA_KEY, f"{SCHEME} {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0].lower() != METADATA_KEY] + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


__all__ = ["ADMIN_TOKEN_ENV", "CLIENT_TOKEN_ENV", "COORDINATOR_TOKEN_SHA256_ENV", "METADATA_KEY", "MAX_TOKEN_CHARS", "SCHEME",
           "SITE_TOKEN_ENV", "BearerTokenInterceptor", "bearer_token", "hash_token", "read_file", "read_token"]
