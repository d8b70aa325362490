"""Authentication and authorisation: bearer tokens in gRPC metadata, roles per method, TLS helpers.

Tokens are random (`secrets.token_urlsafe(32)`) and shown once; only their sha256 is stored, in an
auth file (JSON, mode 0600, replaced atomically):

    {"admins": {"alice": "<sha256 hex>"}, "sites": {"site-3": "<sha256 hex>"}}

Every RPC carries `authorization: Bearer <token>`. `AuthInterceptor` identifies the caller (an admin
name or a site id), enforces the role each method allows (METHOD_ROLES) and hands the caller to the
servicer through a contextvar (`current_caller()`), where ownership rules are checked: a site
uploads, deletes, lists and pings only as itself. The auth file is re-read when it changes
(mtime/size/inode), so issuing, rotating or revoking a token needs no restart.

This module is also the client side (sites, admin CLI, the coordinator calling sites): it must stay
light (grpc + stdlib only).

    python -m coordinator token new    --auth-file FILE --role site|admin --name NAME
    python -m coordinator token revoke --auth-file FILE --role site|admin --name NAME
    python -m coordinator token list   --auth-file FILE
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

ADMIN, SITE = "admin", "site"
ROLES = (ADMIN, SITE)
_TABLES = {ADMIN: "admins", SITE: "sites"}
METADATA_KEY = "authorization"
SCHEME = "Bearer"
SITE_TOKEN_ENV = "TRANSPLANT_SITE_TOKEN"
ADMIN_TOKEN_ENV = "TRANSPLANT_ADMIN_TOKEN"
COORDINATOR_TOKEN_SHA256_ENV = "TRANSPLANT_COORDINATOR_TOKEN_SHA256"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # same rule as site ids in coordinator.validation
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_TOKEN_CHARS = 512

_SERVICE = "/transplant.v1."
# method -> roles allowed to call it; a method missing here is refused to everybody
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"{_SERVICE}ModuleRegistry/Upload": frozenset({SITE}),
    f"{_SERVICE}ModuleRegistry/Delete": frozenset({SITE}),
    f"{_SERVICE}ModuleRegistry/List": frozenset({SITE, ADMIN}),
    f"{_SERVICE}ModuleRegistry/Download": frozenset({SITE, ADMIN}),
    f"{_SERVICE}Heartbeat/Ping": frozenset({SITE}),
    f"{_SERVICE}Control/": frozenset({ADMIN}),  # a trailing '/': every method of the service (admins only)
}


def roles_for(method: str, table: dict[str, frozenset[str]] = METHOD_ROLES) -> frozenset[str]:
    """Roles allowed to call `method` ('/package.Service/Method'): exact entry, else its service's."""
    if method in table:
        return table[method]
    return table.get(method.rsplit("/", 1)[0] + "/", frozenset())


class AuthFileError(ValueError):
    """The auth file is missing, unreadable or malformed."""


class PermissionDenied(Exception):
    """An authenticated caller asked for something its role or identity does not allow."""


@dataclass(frozen=True)
class Caller:
    role: str  # ADMIN or SITE
    name: str  # admin name or site id

    def __str__(self) -> str:
        return f"{self.role} {self.name!r}"


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("transplant_caller", default=None)


def current_caller() -> Caller | None:
    """The authenticated caller of the RPC being served; None when authentication is off."""
    return _caller.get()


def check_site(site_id: str, what: str = "act") -> None:
    """Raises PermissionDenied unless authentication is off, the caller is an admin or is `site_id`."""
    caller = current_caller()
    if caller is not None and caller.role == SITE and caller.name != site_id:
        raise PermissionDenied(f"site {caller.name!r} may not {what} for site {site_id!r}")


def check_site_context(context: grpc.ServicerContext, site_id: str, what: str = "act") -> None:
    """`check_site` that aborts the RPC with PERMISSION_DENIED."""
    try:
        check_site(site_id, what)
    except PermissionDenied as exc:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))


# tokens and the auth file

def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _empty() -> dict[str, dict[str, str]]:
    return {"admins": {}, "sites": {}}


def parse_auth_doc(doc: Any) -> dict[str, dict[str, str]]:
    if not isinstance(doc, dict) or set(doc) - set(_TABLES.values()):
        raise AuthFileError('the auth file must be a JSON object {"admins": {...}, "sites": {...}}')
    out = _empty()
    for table in _TABLES.values():
        entries = doc.get(table, {})
        if not isinstance(entries, dict):
            raise AuthFileError(f"{table!r} must map names to sha256 hex digests")
        for name, digest in entries.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise AuthFileError(f"invalid name {name!r} in {table!r}")
            if not isinstance(digest, str) or not SHA256_HEX.match(digest):
                raise AuthFileError(f"{table}.{name}: not a lowercase sha256 hex digest")
            out[table][name] = digest
    return out


def load_auth_file(path: Path | str) -> dict[str, dict[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFileError(f"cannot read auth file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AuthFileError(f"auth file {path} is not valid JSON: {exc}") from None
    return parse_auth_doc(doc)


def save_auth_file(path: Path | str, doc: dict[str, dict[str, str]]) -> None:
    """Atomic (temp file + fsync + rename in the same folder), readable by the owner only."""
    path = Path(path)
    data = json.dumps(parse_auth_doc(doc), indent=1, sort_keys=True).encode("utf-8") + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialises concurrent `token` commands on the same auth file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_role_name(role: str, name: str) -> str:
    if role not in ROLES:
        raise AuthFileError(f"role must be one of {ROLES}, got {role!r}")
    if not NAME.match(name or ""):
        raise AuthFileError(f"invalid name {name!r}: use 1-64 letters, digits, '_', '-', '.' "
                            "starting with a letter or digit")
    return _TABLES[role]


def issue_token(path: Path | str, role: str, name: str) -> str:
    """A new token for role/name (replacing any existing one: rotation); returns the token itself."""
    table = _check_role_name(role, name)
    path = Path(path)
    with _locked(path):
        doc = load_auth_file(path) if path.exists() else _empty()
        token = new_token()
        doc[table][name] = hash_token(token)
        save_auth_file(path, doc)
    return token


def revoke_token(path: Path | str, role: str, name: str) -> bool:
    """True if role/name had a token and it is now gone."""
    table = _check_role_name(role, name)
    path = Path(path)
    with _locked(path):
        doc = load_auth_file(path)
        if doc[table].pop(name, None) is None:
            return False
        save_auth_file(path, doc)
    return True


def list_tokens(path: Path | str) -> list[tuple[str, str]]:
    doc = load_auth_file(path)
    return [(role, name) for role in ROLES for name in sorted(doc[_TABLES[role]])]


class TokenTable:
    """The auth file in memory; re-read whenever the file changes. Thread-safe.

    If a changed file cannot be read or parsed, every call is refused (fail closed) until it is fixed.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._entries: list[tuple[str, Caller]] = []
        self._error: str | None = None
        self._load(self._file_stamp())  # a broken file at start-up is an error, not a refusal
        if self._error:
            raise AuthFileError(self._error)

    @classmethod
    def from_doc(cls, doc: dict) -> TokenTable:  # tests
        table = cls.__new__(cls)
        table.path, table._lock, table._stamp, table._error = None, threading.Lock(), None, None
        table._entries = _entries(parse_auth_doc(doc))
        return table

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns

    def _load(self, stamp: tuple | None) -> None:
        self._stamp = stamp
        try:
            self._entries, self._error = _entries(load_auth_file(self.path)), None
        except AuthFileError as exc:
            self._entries, self._error = [], str(exc)
            log.error("%s: refusing every RPC until the auth file is fixed", exc)
            return
        log.info("auth file %s loaded: %d admin(s), %d site(s)", self.path,
                 sum(c.role == ADMIN for _, c in self._entries), sum(c.role == SITE for _, c in self._entries))

    def refresh(self) -> None:
        if self.path is None:
            return
        stamp = self._file_stamp()
        with self._lock:
            if stamp != self._stamp:
                self._load(stamp)

    @property
    def error(self) -> str | None:
        return self._error

    def identify(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None. Compares digests in constant time, all of them."""
        self.refresh()
        digest = hash_token(token)
        with self._lock:
            entries = self._entries
        found = None
        for stored, caller in entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = caller
        return found


def _entries(doc: dict[str, dict[str, str]]) -> list[tuple[str, Caller]]:
    return [(digest, Caller(role, name)) for role in ROLES for name, digest in doc[_TABLES[role]].items()]


def bearer_token(metadata) -> str | None:
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


# server side

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _guard(handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], Caller | None]):
    """The same handler, each call first running `check` (which aborts) in the serving thread.

    Interceptors run on gRPC's polling thread; the wrapper sets the caller contextvar in the thread
    that runs the servicer, and resets it afterwards.
    """
    for kind in _KINDS:
        inner = getattr(handler, kind)
        if inner is None:
            continue
        if kind.endswith("stream"):  # streaming replies: the servicer is a generator
            def behaviour(request, context, inner=inner):
                token = _caller.set(check(context))
                try:
                    yield from inner(request, context)
                finally:
                    _caller.reset(token)
        else:
            def behaviour(request, context, inner=inner):
                token = _caller.set(check(context))
                try:
                    return inner(request, context)
                finally:
                    _caller.reset(token)
        return handler._replace(**{kind: behaviour})
    return handler


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
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token")
            if caller.role not in allowed:
                log.warning("%s: %s refused (role)", method, caller)
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{caller} may not call {method.rsplit('/', 1)[-1]} "
                              f"(allowed: {', '.join(sorted(allowed)) or 'nobody'})")
            return caller

        return _guard(handler, check)


class RequireTokenInterceptor(grpc.ServerInterceptor):
    """One expected token, known by its sha256 (a site checking that Evaluate comes from its coordinator)."""

    def __init__(self, token_sha256: str, who: str = "coordinator") -> None:
        token_sha256 = token_sha256.strip().lower()
        if not SHA256_HEX.match(token_sha256):
            raise ValueError("the expected token's sha256 must be 64 hex digits")
        self.digest, self.who = token_sha256, who

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        token = bearer_token(handler_call_details.invocation_metadata)
        ok = token is not None and hmac.compare_digest(hash_token(token), self.digest)

        def check(context: grpc.ServicerContext) -> Caller:
            if not ok:
                context.abort(grpc.StatusCode.UNAUTHENTICATED,
                              f"missing or wrong {self.who} token" if token else
                              f"missing credentials: send metadata '{METADATA_KEY}: {SCHEME} <token>'")
            return Caller(ADMIN, self.who)

        return _guard(handler, check)


def server_credentials(cert_file: Path | str, key_file: Path | str,
                       client_ca_file: Path | str | None = None) -> grpc.ServerCredentials:
    """TLS; with a client CA, mutual TLS: clients must present a certificate that CA signed."""
    ca = read_file(client_ca_file, "TLS client CA") if client_ca_file else None
    return grpc.ssl_server_credentials([(read_file(key_file, "TLS key"), read_file(cert_file, "TLS certificate"))],
                                       root_certificates=ca, require_client_auth=ca is not None)


# client side

def read_file(path: Path | str, what: str) -> bytes:
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


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches a server: optional bearer token, optional TLS (CA, client cert + key)."""

    token: str | None = None
    tls_ca: bytes | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None

    @classmethod
    def from_files(cls, token: str | None = None, tls_ca: Path | str | None = None,
                   tls_cert: Path | str | None = None, tls_key: Path | str | None = None) -> ClientSecurity:
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        return cls(token, read_file(tls_ca, "TLS CA") if tls_ca else None,
                   read_file(tls_cert, "TLS certificate") if tls_cert else None,
                   read_file(tls_key, "TLS key") if tls_key else None)

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def channel(self, target: str, options: list | tuple = ()) -> grpc.Channel:
        if self.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=self.tls_ca, private_key=self.tls_key,
                                                       certificate_chain=self.tls_cert)
            channel = grpc.secure_channel(target, credentials, options=list(options))
        else:
            channel = grpc.insecure_channel(target, options=list(options))
        if self.token:
            channel = grpc.intercept_channel(channel, BearerTokenInterceptor(self.token))
        return channel


PLAINTEXT = ClientSecurity()


def is_loopback(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1", "[::1]") or host.startswith("127.")


# CLI: python -m coordinator token ...

def add_token_commands(commands) -> None:
    token = commands.add_parser("token", help="issue, rotate, revoke and list access tokens (auth file)")
    actions = token.add_subparsers(dest="action", required=True)
    for action, text in (("new", "issue a token (replaces an existing one: rotation); printed once"),
                         ("revoke", "remove a token"), ("list", "list who holds a token (never the tokens)")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--auth-file", required=True, type=Path, help="the coordinator's auth file (JSON)")
        if action != "list":
            parser.add_argument("--role", required=True, choices=[SITE, ADMIN])
            parser.add_argument("--name", required=True, help="site id (role site) or admin name (role admin)")


def run_token_command(args) -> int:
    import sys

    try:
        if args.action == "new":
            token = issue_token(args.auth_file, args.role, args.name)
            print(token)
            print(f"issued {'an' if args.role == ADMIN else 'a'} {args.role} token for {args.name!r} in {args.auth_file}; it is shown only once "
                  "(the file keeps its sha256)", file=sys.stderr)
            return 0
        if args.action == "revoke":
            if not revoke_token(args.auth_file, args.role, args.name):
                print(f"error: no {args.role} token for {args.name!r} in {args.auth_file}", file=sys.stderr)
                return 2
            print(f"revoked the {args.role} token of {args.name!r}")
            return 0
        for role, name in list_tokens(args.auth_file):
            print(f"{role}\t{name}")
        return 0
    except AuthFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["ADMIN", "SITE", "AuthFileError", "AuthInterceptor", "BearerTokenInterceptor", "Caller",
           "ClientSecurity", "PermissionDenied", "RequireTokenInterceptor", "TokenTable", "check_site",
           "current_caller", "hash_token", "issue_token", "list_tokens", "new_token", "read_token",
           "revoke_token", "server_credentials"]
