"""Transport security: how a client reaches a server (token, TLS, mutual TLS) and a server's TLS credentials."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from common.bearer import BearerTokenInterceptor, read_file


def server_credentials(cert_file: Path | str, key_file: Path | str,
                       client_ca_file: Path | str | None = None) -> grpc.ServerCredentials:
    """TLS; with a client CA, mutual TLS: clients must present a certificate that CA signed."""
    ca = read_file(client_ca_file, "TLS client CA") if client_ca_file else None
    return grpc.ssl_server_credentials([(read_file(key_file, "TLS key"), read_file(cert_file, "TLS certificate"))],
                                       root_certificates=ca, require_client_auth=ca is not None)


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

    def channel(self, target: str, options: list[tuple[str, Any]] | tuple[tuple[str, Any], ...] = ()) -> grpc.Channel:
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


__all__ = ["PLAINTEXT", "ClientSecurity", "is_loopback", "server_credentials"]
