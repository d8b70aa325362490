"""The one place where coordinator errors become gRPC status codes.

Servicer code raises plain exceptions (a bad request, something missing, a conflict, the store being
down); `grpc_errors` wraps a servicer method and aborts the call with the mapped code and message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import grpc

from coordinator.resolve import ResolveError
from coordinator.store import StoreError
from coordinator.validation import UploadRejected


class InvalidRequest(ValueError):
    """The request itself is wrong (INVALID_ARGUMENT)."""


class NotFound(LookupError):
    """What the request names does not exist (NOT_FOUND)."""


class Conflict(Exception):
    """The request is fine but the state it finds does not allow it (FAILED_PRECONDITION)."""


class TooLarge(ValueError):
    """The request is over a size limit; refused before it is allocated (RESOURCE_EXHAUSTED)."""


class NotReady(Exception):
    """The server cannot answer yet, e.g. no net version is loaded; retry later (UNAVAILABLE)."""


def _permission_denied() -> type[Exception]:
    from coordinator.auth import PermissionDenied  # late: auth imports the token table and friends
    return PermissionDenied


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """(code, message) for an error the servicers raise on purpose; None for a bug."""
    if isinstance(exc, UploadRejected):
        return (grpc.StatusCode.RESOURCE_EXHAUSTED if exc.quota else grpc.StatusCode.INVALID_ARGUMENT), str(exc)
    if isinstance(exc, TooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (InvalidRequest, ResolveError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, (NotFound, LookupError)):
        return grpc.StatusCode.NOT_FOUND, str(exc.args[0] if exc.args else exc)
    if isinstance(exc, Conflict):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, StoreError):  # after the store's own bounded retries
        return grpc.StatusCode.UNAVAILABLE, f"object store unavailable: {exc}"
    if isinstance(exc, _permission_denied()):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    return None


def abort(context: grpc.ServicerContext, exc: Exception) -> None:
    """Aborts the call for a mapped error; re-raises anything else (gRPC reports it as UNKNOWN)."""
    status = status_for(exc)
    if status is None:
        raise exc
    context.abort(*status)


def grpc_errors(method: Callable) -> Callable:
    """Decorator for unary servicer methods: mapped errors abort the call with their code."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - `abort` re-raises what it does not map
            if status_for(exc) is None:
                raise
            abort(context, exc)

    return wrapper
