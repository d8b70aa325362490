"""Server-side plumbing both servers use: who is calling (a contextvar) and one expected token.

The coordinator's AuthInterceptor (coordinator.auth) and the site's RequireTokenInterceptor both wrap
each handler with `guard`, so the check runs, and the caller is set, in the thread that serves the call.
"""
from __future__ import annotations

import contextvars
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from common.bearer import METADATA_KEY, SCHEME, bearer_token, hash_token
from common.patterns import SHA256_HEX

ADMIN, SITE, CLIENT = "admin", "site", "client"  # client: an end user of the Predict service, nothing else
ROLES = (ADMIN, SITE, CLIENT)


@dataclass(frozen=True)
class Caller:
    role: str  # one of ROLES
    name: str  # admin name, site id or client name

    def __str__(self) -> str:
        return f"{self.role} {self.name!r}"


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("transplant_caller", default=None)


def current_caller() -> Caller | None:
    """The authenticated caller of the RPC being served; None when authentication is off."""
    return _caller.get()


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def guard(handler: grpc.RpcMethodHandler,
          check: Callable[[grpc.ServicerContext], Caller | None]) -> grpc.RpcMethodHandler:
    """The same handler, each call first running `check` (which aborts) in the serving thread.

    Interceptors run on gRPC's polling thread; the wrapper sets the caller contextvar in the thread
    that runs the servicer, and resets it afterwards.
    """
    for kind in _KINDS:
        inner = getattr(handler, kind)
        if inner is None:
            continue
        if kind.endswith("stream"):  # streaming replies: the servicer is a generator
            def behaviour(request: Any, context: grpc.ServicerContext, inner: Any = inner) -> Any:
                token = _caller.set(check(context))
                try:
                    yield from inner(request, context)
                finally:
                    _caller.reset(token)
        else:
            def behaviour(request: Any, context: grpc.ServicerContext, inner: Any = inner) -> Any:
                token = _caller.set(check(context))
                try:
                    return inner(request, context)
                finally:
                    _caller.reset(token)
        return handler._replace(**{kind: behaviour})
    return handler


class RequireTokenInterceptor(grpc.ServerInterceptor):
    """An expected token, known by its sha256 (a site checking that Evaluate comes from its coordinator).

    Several digests: any of them (the old and the new credential while a rotation is rolled out).
    """

    def __init__(self, token_sha256: str | Iterable[str], who: str = "coordinator") -> None:
        digests = [token_sha256] if isinstance(token_sha256, str) else list(token_sha256)
        digests = [d.strip().lower() for d in digests]
        if not digests or not all(SHA256_HEX.match(d) for d in digests):
            raise ValueError("the expected token's sha256 must be 64 hex digits")
        self.digests, self.who = digests, who

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        token = bearer_token(handler_call_details.invocation_metadata)
        ok = token is not None and _any_equal(hash_token(token), self.digests)

        def check(context: grpc.ServicerContext) -> Caller:
            if not ok:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              f"missing or wrong {self.who} token" if token else
                              f"missing credentials: send metadata '{METADATA_KEY}: {SCHEME} <token>'")
            return Caller(ADMIN, self.who)

        return guard(handler, check)


def _any_equal(digest: str, digests: list[str]) -> bool:
    """Constant time in which one matched: every digest is compared."""
    return sum(hmac.compare_digest(digest, d) for d in digests) > 0


__all__ = ["ADMIN", "CLIENT", "ROLES", "SITE", "Caller", "RequireTokenInterceptor", "current_caller", "guard"]
