"""Server-side authorisation: who may call which RPC, and ownership rules inside the servicers.

Every RPC carries `authorization: Bearer <token>` (common.bearer). `AuthInterceptor` identifies the
caller from the auth file (coordinator.tokens.TokenTable: an admin name or a site id), enforces the
role each method allows (METHOD_ROLES) and hands the caller to the servicer through a contextvar
(`current_caller()`, common.guard), where ownership rules are checked: a site uploads, deletes,
lists and pings only as itself.

The client side (tokens, TLS) lives in common/, the auth file and `token` CLI in coordinator.tokens.
"""

from __future__ import annotations

import logging

import grpc

from common.bearer import ADMIN_TOKEN_ENV, METADATA_KEY, SCHEME, bearer_token, read_token  # noqa: F401
from common.guard import ADMIN, CLIENT, SITE, Caller, current_caller, guard
from common.patterns import ADAPTER, BASE_SITE, CATEGORY, SAMPLES, TASK
# re-exported: coordinator modules still call these as auth.<name> (server.py, admin.py)
from common.security import PLAINTEXT, ClientSecurity, is_loopback, server_credentials  # noqa: F401
from coordinator.tokens import TokenTable

log = logging.getLogger(__name__)

_SERVICE = "/transplant.v1."
# method -> roles allowed to call it; a method missing here is refused to everybody
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"{_SERVICE}ModuleRegistry/Upload": frozenset({SITE, ADMIN}),  # admins: shared bases only (registry_service)
    f"{_SERVICE}ModuleRegistry/Delete": frozenset({SITE}),
    f"{_SERVICE}ModuleRegistry/List": frozenset({SITE, ADMIN}),
    f"{_SERVICE}ModuleRegistry/Download": frozenset({SITE, ADMIN}),
    f"{_SERVICE}Heartbeat/Ping": frozenset({SITE}),
    f"{_SERVICE}Control/": frozenset({ADMIN}),  # a trailing '/': every method of the service (admins only)
    f"{_SERVICE}Predict/": frozenset({CLIENT, ADMIN}),  # end users; the only service a client token reaches
}


def roles_for(method: str, table: dict[str, frozenset[str]] = METHOD_ROLES) -> frozenset[str]:
    """Roles allowed to call `method` ('/package.Service/Method'): exact entry, else its service's."""
    if method in table:
        return table[method]
    return table.get(method.rsplit("/", 1)[0] + "/", frozenset())


class PermissionDenied(Exception):
    """An authenticated caller asked for something its role or identity does not allow."""


def check_site(site_id: str, what: str = "act") -> None:
    """Raises PermissionDenied unless authentication is off, the caller is an admin or is `site_id`."""
    caller = current_caller()
    if caller is not None and caller.role == SITE and caller.name != site_id:
        raise PermissionDenied(f"site {caller.name!r} may not {what} for site {site_id!r}")


# What a caller may download besides its own site's modules (the download policy): a site needs the generic
# site's task modules and the coordinator's adapters to evaluate a job; nobody but the owning site needs its
# category module; shared samples are read only by their site and the coordinator's own training (straight
# from the store, never over this RPC), so not by admins either.
SITE_READS_OTHERS = frozenset({TASK, ADAPTER})
ADMIN_READS = frozenset({CATEGORY, TASK, ADAPTER})


def check_download(owner: str, role: str) -> None:
    """Raises PermissionDenied unless the caller may read a module of site `owner` with `role`."""
    caller = current_caller()
    if caller is None or (caller.role == SITE and (caller.name == owner or role in SITE_READS_OTHERS)):
        return
    if owner == BASE_SITE and role in (CATEGORY, TASK):  # a shared base is published for every site to start from
        return
    if caller.role == ADMIN and role in ADMIN_READS:
        return
    what = "shared samples" if role == SAMPLES else f"{role} modules"
    raise PermissionDenied(f"{caller} may not download {what} of site {owner!r}"
                           + (": samples are read only by their site and the coordinator" if role == SAMPLES else ""))


def check_site_context(context: grpc.ServicerContext, site_id: str, what: str = "act") -> None:
    """`check_site` that aborts the RPC with PERMISSION_DENIED."""
    try:
        check_site(site_id, what)
    except PermissionDenied as exc:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a known token (UNAUTHENTICATED) or outside the caller's role (PERMISSION_DENIED)."""

    def __init__(self, tokens: TokenTable, method_roles: dict[str, frozenset[str]] | None = None) -> None:
        self.tokens = tokens
        self.method_roles = METHOD_ROLES if method_roles is None else method_roles

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        allowed = roles_for(method, self.method_roles)
        token = bearer_token(handler_call_details.invocation_metadata)

        def check(context: grpc.ServicerContext) -> Caller:
            self.tokens.refresh()
            if self.tokens.error:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the coordinator's auth file is broken; "
                                                           "every call is refused until an operator fixes it")
            if token is None:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              f"missing credentials: send metadata '{METADATA_KEY}: {SCHEME} <token>'")
            caller = self.tokens.identify(token)
            if caller is None:
                log.warning("%s: unknown token from %s", method, context.peer())
                context.abort(grpc.StatusCode.UNAUTHENTICATED, self.tokens.refusal(token))
                raise AssertionError("unreachable: context.abort raises")  # tells the type checker
            if caller.role not in allowed:
                log.warning("%s: %s refused (role)", method, caller)
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{caller} may not call {method.rsplit('/', 1)[-1]} "
                              f"(allowed: {', '.join(sorted(allowed)) or 'nobody'})")
            return caller

        return guard(handler, check)


__all__ = ["ADMIN", "ADMIN_TOKEN_ENV", "CLIENT", "METHOD_ROLES", "SITE", "AuthInterceptor", "Caller", "PermissionDenied",
           "TokenTable", "check_download", "check_site", "check_site_context", "current_caller", "roles_for"]
