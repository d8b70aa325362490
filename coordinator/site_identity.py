"""Who a site is, in both directions: the coordinator's credential for each site, and where a site may be.

*Towards a site.* The coordinator holds one secret (its `--coordinator-token-file`) and presents each site a
credential derived from it for that site alone: HMAC-SHA256(secret, site id). A site knows only the sha256
of its own credential (`python -m coordinator token site-credential` prints it), so what one site sees when
the coordinator calls its Evaluate is refused by every other site, and the secret never leaves the
coordinator. The secret file is re-read when it changes: rotating it needs no coordinator restart.

*Where a site may be.* A site's heartbeat announces the endpoint the coordinator will dial. With
authentication on, the host must be one the admin registered for that site (`token new --host`, kept in
the auth file); a site registered without hosts may announce a loopback endpoint only (one machine).
Unspecified, link-local, multicast and broadcast addresses are refused always.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import threading
from pathlib import Path

from common.bearer import hash_token, read_token
from common.security import is_loopback

_CONTEXT = b"transplant/site-evaluate/v1/"  # a fixed label: the derived value is useful for nothing else
_HOSTNAME = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")


class EndpointError(ValueError):
    """An announced endpoint that does not read HOST:PORT (INVALID_ARGUMENT)."""


class EndpointRefused(Exception):
    """A well-formed endpoint this site may not announce (PERMISSION_DENIED)."""


def site_credential(secret: str, site_id: str) -> str:
    """The bearer token the coordinator presents to `site_id` (43 url-safe characters)."""
    mac = hmac.new(secret.encode("utf-8"), _CONTEXT + site_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def site_credential_sha256(secret: str, site_id: str) -> str:
    """What `site_id` configures as `--coordinator-token-sha256`."""
    return hash_token(site_credential(secret, site_id))


class SiteCredentials:
    """The coordinator's secret from its token file, re-read whenever the file changes; thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._secret = ""
        try:  # a missing or empty file stops start-up, not the first evaluation
            self._reload()
        except OSError as exc:
            raise ValueError(f"cannot read the coordinator token file {self.path}: {exc.strerror or exc}") from None

    def _reload(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._secret = read_token(self.path) or ""
            self._stamp = stamp

    def for_site(self, site_id: str) -> str:
        with self._lock:
            try:
                self._reload()
            except (OSError, ValueError):  # mid-rotation (file briefly absent/empty): keep the last good one
                pass
            return site_credential(self._secret, site_id)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of 'host:port' or '[v6]:port'; EndpointError otherwise."""
    if not isinstance(endpoint, str) or not 3 <= len(endpoint) <= 255:
        raise EndpointError("endpoint must be host:port (at most 255 characters)")
    host, sep, port = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(f"endpoint {endpoint!r} must be host:port with a port 1-65535")
    if not _is_ip(host) and not _HOSTNAME.match(host):
        raise EndpointError(f"endpoint {endpoint!r}: {host!r} is neither a host name nor an IP address")
    return host.lower().rstrip("."), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _never(host: str) -> str | None:
    """Why no site may announce `host`, or None."""
    if not _is_ip(host):
        return None
    ip = ipaddress.ip_address(host)
    for bad, what in ((ip.is_unspecified, "unspecified"), (ip.is_link_local, "link-local"),
                      (ip.is_multicast, "multicast"), (str(ip) == "255.255.255.255", "broadcast")):
        if bad:
            return f"{what} address {host}"
    return None


def _matches(host: str, allowed: str) -> bool:
    """`allowed` is a host name (exact, case-insensitive) or an IP address or network ('10.1.0.0/16')."""
    allowed = allowed.lower().rstrip(".")
    if "/" in allowed and _is_ip(host):
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(allowed, strict=False)
        except ValueError:
            return False
    return host == allowed


def check_endpoint(site_id: str, endpoint: str, hosts: tuple[str, ...] | None) -> None:
    """Raises EndpointError (malformed) or EndpointRefused unless `site_id` may announce `endpoint`.

    `hosts`: None when authentication is off (any well-formed, dialable endpoint), () for a site
    registered without hosts (loopback only), else the hosts and networks the admin registered.
    """
    host, _ = split_endpoint(endpoint)
    reason = _never(host)
    if reason:
        raise EndpointRefused(f"site {site_id!r} may not announce {endpoint!r}: {reason}")
    if hosts is None:
        return
    if not hosts:
        if not is_loopback(host):
            raise EndpointRefused(f"site {site_id!r} may announce only loopback endpoints: no hosts are registered "
                                  f"for it (python -m coordinator token new --role site --name {site_id} --host ...)")
        return
    if not any(_matches(host, allowed) for allowed in hosts):
        raise EndpointRefused(f"site {site_id!r} may not announce {endpoint!r}: its registered hosts are "
                              f"{', '.join(hosts)}")


def check_host_rule(rule: str) -> str:
    """A `--host` value as stored in the auth file; ValueError if it is neither a host name nor an IP/network."""
    value = rule.strip().lower().rstrip(".")
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"host rule {rule!r} is not an IP network") from None
        return value
    if _is_ip(value) or _HOSTNAME.match(value):
        return value
    raise ValueError(f"host rule {rule!r} is neither a host name nor an IP address")


__all__ = ["EndpointError", "EndpointRefused", "SiteCredentials", "check_endpoint", "check_host_rule",
           "site_credential", "site_credential_sha256", "split_endpoint"]
