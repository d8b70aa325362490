"""What an auth-file entry grants beyond the token itself: an expiry, and for a site the hosts it may announce.

An entry (coordinator.tokens) is either the token's sha256 hex, or an object
`{"sha256": HEX, "expires": UNIX_SECONDS, "hosts": [HOST_OR_NETWORK, ...]}` (both keys optional, hosts for
sites only). The `token` CLI's extra options (`new --expires-in/--host`, `site-credential`) live here too.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from common.bearer import read_token
from common.patterns import NAME, NAME_RULE, SHA256_HEX
from coordinator.site_identity import check_host_rule, site_credential_sha256

Entry = str | dict[str, Any]
DEFAULT_LIFETIME = "365d"  # what `token new` gives unless told otherwise; `--expires-in never` for none
MAX_HOSTS = 32
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(\d{1,6})([smhd])\Z")


def entry_problem(entry: Any, site: bool) -> str | None:
    """Why `entry` is not a valid auth-file entry (None: it is)."""
    if isinstance(entry, str):
        return None if SHA256_HEX.match(entry) else "not a lowercase sha256 hex digest"
    if not isinstance(entry, dict) or set(entry) - {"sha256", "expires", "hosts"}:
        return 'must be a sha256 hex digest or {"sha256": ..., "expires": ..., "hosts": [...]}'
    if not isinstance(entry.get("sha256"), str) or not SHA256_HEX.match(entry["sha256"]):
        return "sha256: not a lowercase sha256 hex digest"
    expires = entry.get("expires")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)):
        return "expires: must be unix seconds"
    hosts = entry.get("hosts", [])
    if hosts and not site:
        return "hosts: only site tokens announce endpoints"
    if not isinstance(hosts, list) or len(hosts) > MAX_HOSTS or not all(isinstance(h, str) for h in hosts):
        return f"hosts: must be a list of at most {MAX_HOSTS} host names or IP networks"
    for host in hosts:
        try:
            check_host_rule(host)
        except ValueError as exc:
            return f"hosts: {exc}"
    return None


def make_entry(digest: str, expires: float | None = None, hosts: tuple[str, ...] | list[str] = ()) -> Entry:
    if expires is None and not hosts:
        return digest  # the plain form older files use
    entry: dict[str, Any] = {"sha256": digest}
    if expires is not None:
        entry["expires"] = int(expires)
    if hosts:
        entry["hosts"] = [check_host_rule(h) for h in hosts]
    return entry


def entry_digest(entry: Entry) -> str:
    return entry if isinstance(entry, str) else entry["sha256"]


def entry_expires(entry: Entry) -> float | None:
    return None if isinstance(entry, str) else entry.get("expires")


def entry_hosts(entry: Entry) -> tuple[str, ...]:
    return () if isinstance(entry, str) else tuple(entry.get("hosts", ()))


def parse_lifetime(text: str) -> float | None:
    """Seconds of '90d', '12h', '30m', '3600s'; None for 'never'. ValueError otherwise."""
    if text.strip().lower() == "never":
        return None
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"--expires-in {text!r}: use a positive number with s, m, h or d (e.g. 90d), or 'never'")
    return int(match.group(1)) * _UNITS[match.group(2)]


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def describe_entry(entry: Entry, now: float | None = None) -> str:
    """What `token list` prints after role and name."""
    now = time.time() if now is None else now
    expires, hosts = entry_expires(entry), entry_hosts(entry)
    out = "" if expires is None else f"\t{'EXPIRED' if expires <= now else 'expires'} {when(expires)}"
    return out + (f"\thosts {','.join(hosts)}" if hosts else "")


# CLI ---------------------------------------------------------------------------------------------

def add_grant_arguments(actions: Any) -> None:
    """`token new --expires-in/--host` and `token site-credential`, on the `token` subparsers."""
    new = actions.choices["new"]
    new.add_argument("--expires-in", default=DEFAULT_LIFETIME, metavar="DURATION",
                     help=f"lifetime: 90d, 12h, 30m, 3600s or 'never' (default {DEFAULT_LIFETIME})")
    new.add_argument("--host", action="append", default=[], metavar="HOST_OR_NETWORK",
                     help="role site: a host (or IP network, e.g. 10.1.0.0/16) the site may announce as its "
                          "endpoint; repeat for several; none: loopback endpoints only")
    cred = actions.add_parser("site-credential", help="print the sha256 a site configures as "
                                                      "--coordinator-token-sha256 (the coordinator's credential "
                                                      "for that site alone)")
    cred.add_argument("--coordinator-token-file", required=True, help="the coordinator's secret (serve's file)")
    cred.add_argument("--name", required=True, help="the site id")


def grant_options(args: argparse.Namespace) -> dict[str, Any]:
    """issue_token's keyword arguments from `token new`'s flags (ValueError on bad ones)."""
    lifetime = parse_lifetime(args.expires_in)
    if args.host and args.role != "site":
        raise ValueError("--host is for site tokens only (the hosts a site may announce)")
    return {"expires": None if lifetime is None else time.time() + lifetime,
            "hosts": tuple(check_host_rule(h) for h in args.host)}


def print_site_credential(args: argparse.Namespace) -> int:
    if not NAME.match(args.name or ""):
        print(f"error: invalid site id {args.name!r}: {NAME_RULE}", file=sys.stderr)
        return 2
    try:
        secret = read_token(args.coordinator_token_file)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(site_credential_sha256(secret or "", args.name))
    return 0


__all__ = ["DEFAULT_LIFETIME", "Entry", "add_grant_arguments", "describe_entry", "entry_digest", "entry_expires",
           "entry_hosts", "entry_problem", "grant_options", "make_entry", "parse_lifetime",
           "print_site_credential", "when"]
