"""What the shared clients raise: operator-facing problems, each with a one-line message."""
from __future__ import annotations

import grpc


class WireError(Exception):
    """Base of every error raised by common/ (a CLI prints it as `error: ...`)."""


class AddressError(WireError, ValueError):
    """An address that is not HOST:PORT."""


class RegistryError(WireError):
    """The registry answered with a final error, or its bytes failed a check (`code` None)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class RegistryUnavailable(RegistryError):
    """The registry stayed UNAVAILABLE through every retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, grpc.StatusCode.UNAVAILABLE)


class DownloadError(RegistryError):
    """A download ended early, out of order, or with bytes that do not match the announced size/sha256."""


__all__ = ["AddressError", "DownloadError", "RegistryError", "RegistryUnavailable", "WireError"]
