"""The auth file and its CLI: issuing, rotating, revoking and listing access tokens.

Tokens are random (`secrets.token_urlsafe(32)`) and shown once; only their sha256 is stored, in an
auth file (JSON, mode 0600, replaced atomically):

    {"admins": {"alice": "<sha256 hex>"}, "sites": {"site-3": "<sha256 hex>"}, "clients": {"app": "<sha256 hex>"}}

An entry may instead be an object with an expiry (unix seconds) and, for a site, the hosts it may
announce as its endpoint (coordinator.grants, coordinator.site_identity):

    {"sites": {"site-3": {"sha256": "<sha256 hex>", "expires": 1798761600, "hosts": ["site-3.example"]}}}

`TokenTable` is that file in memory on the server, re-read when it changes (mtime/size/inode), so
issuing, rotating or revoking a token needs no restart; an expired token is refused from that second on.
`token new` takes `--expires-in 365d|12h|never` (default 365d) and, for sites, `--host` (repeatable);
`token site-credential --coordinator-token-file F --name SITE` prints what that site configures as
`--coordinator-token-sha256`.

    python -m coordinator token new    --auth-file FILE --role site|admin|client --name NAME
    python -m coordinator token revoke --auth-file FILE --role site|admin|client --name NAME
    python -m coordinator token list   --auth-file FILE
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.bearer import hash_token
from common.guard import ADMIN, CLIENT, ROLES, SITE, Caller
from common.patterns import NAME, NAME_RULE
from coordinator.grants import (Entry, add_grant_arguments, describe_entry, entry_digest, entry_expires, entry_hosts,
                                entry_problem, grant_options, make_entry, print_site_credential, when)

log = logging.getLogger(__name__)
_TABLES = {ADMIN: "admins", SITE: "sites", CLIENT: "clients"}


class AuthFileError(ValueError):
    """The auth file is missing, unreadable or malformed."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


AuthDoc = dict[str, dict[str, Entry]]  # table -> name -> entry (coordinator.grants)


def _empty() -> AuthDoc:
    return {table: {} for table in _TABLES.values()}


def parse_auth_doc(doc: Any) -> AuthDoc:
    if not isinstance(doc, dict) or set(doc) - set(_TABLES.values()):
        raise AuthFileError('the auth file must be a JSON object {"admins": {...}, "sites": {...}, "clients": {...}}')
    out = _empty()
    for table in _TABLES.values():
        entries = doc.get(table, {})
        if not isinstance(entries, dict):
            raise AuthFileError(f"{table!r} must map names to sha256 hex digests")
        for name, digest in entries.items():
            if not isinstance(name, str) or not NAME.match(name):
                raise AuthFileError(f"invalid name {name!r} in {table!r}")
            problem = entry_problem(digest, table == _TABLES[SITE])
            if problem:
                raise AuthFileError(f"{table}.{name}: {problem}")
            out[table][name] = digest
    return out


def load_auth_file(path: Path | str) -> AuthDoc:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthFileError(f"cannot read auth file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise AuthFileError(f"auth file {path} is not valid JSON: {exc}") from None
    return parse_auth_doc(doc)


def save_auth_file(path: Path | str, doc: AuthDoc) -> None:
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
        raise AuthFileError(f"invalid name {name!r}: {NAME_RULE}")
    return _TABLES[role]


def issue_token(path: Path | str, role: str, name: str, expires: float | None = None,
                hosts: tuple[str, ...] = ()) -> str:
    """A new token for role/name (replacing any existing one: rotation); returns the token itself.

    `expires`: unix seconds after which it is refused (None: never); `hosts`: a site's endpoint hosts."""
    table = _check_role_name(role, name)
    path = Path(path)
    with _locked(path):
        doc = load_auth_file(path) if path.exists() else _empty()
        token = new_token()
        doc[table][name] = make_entry(hash_token(token), expires, hosts)
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
        auth_file = Path(path)
        self.path: Path | None = auth_file  # None: a table made from a document (tests), never reloaded
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._entries: list[tuple[str, Caller]] = []
        self._grants: dict[Caller, Entry] = {}  # expiry and hosts, by caller
        self._error: str | None = None
        self._load(auth_file, self._file_stamp(auth_file))  # a broken file at start-up is an error, not a refusal
        if self._error:
            raise AuthFileError(self._error)

    @classmethod
    def from_doc(cls, doc: dict) -> TokenTable:  # tests
        table = cls.__new__(cls)
        table.path, table._lock, table._stamp, table._error = None, threading.Lock(), None, None
        parsed = parse_auth_doc(doc)
        table._entries, table._grants = _entries(parsed), _grants(parsed)
        return table

    @staticmethod
    def _file_stamp(path: Path) -> tuple | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns

    def _load(self, path: Path, stamp: tuple | None) -> None:
        self._stamp = stamp
        try:
            doc = load_auth_file(path)
            self._entries, self._grants, self._error = _entries(doc), _grants(doc), None
        except AuthFileError as exc:
            self._entries, self._error = [], str(exc)
            log.error("%s: refusing every RPC until the auth file is fixed", exc)
            return
        log.info("auth file %s loaded: %d admin(s), %d site(s)", path,
                 sum(c.role == ADMIN for _, c in self._entries), sum(c.role == SITE for _, c in self._entries))

    def refresh(self) -> None:
        path = self.path
        if path is None:
            return
        stamp = self._file_stamp(path)
        with self._lock:
            if stamp != self._stamp:
                self._load(path, stamp)

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
        return None if found is None or self.expired(found) else found

    def expired(self, caller: Caller, now: float | None = None) -> bool:
        expires = entry_expires(self._grants.get(caller, ""))
        return expires is not None and expires <= (time.time() if now is None else now)

    def refusal(self, token: str) -> str:
        """Why `token` is refused: expired (and when) or unknown; for the UNAUTHENTICATED message."""
        digest = hash_token(token)
        for stored, caller in self._entries:
            if hmac.compare_digest(stored, digest) and self.expired(caller):
                return f"token expired at {when(entry_expires(self._grants[caller]) or 0)}; ask for a new one"
        return "unknown or revoked token"

    def hosts(self, site_id: str) -> tuple[str, ...]:
        """The hosts an admin registered for `site_id` (empty: loopback only; see coordinator.site_identity)."""
        self.refresh()
        return entry_hosts(self._grants.get(Caller(SITE, site_id), ""))


def _entries(doc: AuthDoc) -> list[tuple[str, Caller]]:
    return [(entry_digest(entry), Caller(role, name)) for role in ROLES for name, entry in doc[_TABLES[role]].items()]


def _grants(doc: AuthDoc) -> dict[Caller, Entry]:
    return {Caller(role, name): entry for role in ROLES for name, entry in doc[_TABLES[role]].items()
            if not isinstance(entry, str)}


# CLI: python -m coordinator token ...

def add_token_commands(commands: Any) -> None:
    """Adds `token new|revoke|list` to an argparse subparsers object."""
    token = commands.add_parser("token", help="issue, rotate, revoke and list access tokens (auth file)")
    actions = token.add_subparsers(dest="action", required=True)
    for action, text in (("new", "issue a token (replaces an existing one: rotation); printed once"),
                         ("revoke", "remove a token"), ("list", "list who holds a token (never the tokens)")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("--auth-file", required=True, type=Path, help="the coordinator's auth file (JSON)")
        if action != "list":
            parser.add_argument("--role", required=True, choices=[SITE, ADMIN, CLIENT])
            parser.add_argument("--name", required=True, help="site id (role site), admin name (role admin) or client name "
                                                                  "(role client: may call Predict only)")

    add_grant_arguments(actions)


def run_token_command(args: argparse.Namespace) -> int:
    try:
        if args.action == "site-credential":
            return print_site_credential(args)
        if args.action == "new":
            token = issue_token(args.auth_file, args.role, args.name, **grant_options(args))
            print(token)
            print(f"issued {'an' if args.role == ADMIN else 'a'} {args.role} token for {args.name!r} in "
                  f"{args.auth_file}; it is shown only once (the file keeps its sha256)", file=sys.stderr)
            return 0
        if args.action == "revoke":
            if not revoke_token(args.auth_file, args.role, args.name):
                print(f"error: no {args.role} token for {args.name!r} in {args.auth_file}", file=sys.stderr)
                return 2
            print(f"revoked the {args.role} token of {args.name!r}")
            return 0
        doc = load_auth_file(args.auth_file)
        for role, name in list_tokens(args.auth_file):
            print(f"{role}\t{name}{describe_entry(doc[_TABLES[role]][name])}")
        return 0
    except ValueError as exc:  # AuthFileError, a bad --expires-in or --host
        print(f"error: {exc}", file=sys.stderr)
        return 2


__all__ = ["AuthFileError", "TokenTable", "add_token_commands", "issue_token", "list_tokens", "load_auth_file",
           "new_token", "parse_auth_doc", "revoke_token", "run_token_command", "save_auth_file"]
