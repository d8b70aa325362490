"""Adapter configuration: small, JSON, saved next to the weights like a peft adapter_config.json."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ADAPTER_FORMAT = "transplant.adapter.v1"


class AdapterConfigError(ValueError):
    """An adapter config is malformed; the message names the field."""


@dataclass(frozen=True)
class AdapterConfig:
    """reorder (fixed permutation, optional) -> rescale (beta) -> layers x (conv MxM + ReLU)."""

    channels: int                       # M, channels of the category module's output
    layers: int = 1                     # n >= 1
    kernel_size: int = 1                # 1 (no padding) or 3 (padding 1): feature-map size unchanged
    beta: float = 1.0                   # E||f_S(I)||_F / E||f(I)||_F, from feature statistics
    permutation: tuple[int, ...] | None = None  # reorder: output channel i reads input channel perm[i]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.channels, int) or not 1 <= self.channels <= 8192:
            raise AdapterConfigError(f"channels must be an integer in 1..8192, got {self.channels!r}")
        if not isinstance(self.layers, int) or not 1 <= self.layers <= 16:
            raise AdapterConfigError(f"layers must be an integer in 1..16, got {self.layers!r}")
        if self.kernel_size not in (1, 3):
            raise AdapterConfigError(f"kernel_size must be 1 or 3, got {self.kernel_size!r}")
        if not isinstance(self.beta, (int, float)) or not 0 < float(self.beta) < 1e6:
            raise AdapterConfigError(f"beta must be a positive finite number, got {self.beta!r}")
        if self.permutation is not None:
            perm = tuple(self.permutation)
            if sorted(perm) != list(range(self.channels)):
                raise AdapterConfigError("permutation must be a permutation of 0..channels-1")
            object.__setattr__(self, "permutation", perm)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["permutation"] = list(self.permutation) if self.permutation is not None else None
        return {"format": ADAPTER_FORMAT, **doc}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, doc: Any) -> "AdapterConfig":
        if not isinstance(doc, dict) or doc.get("format") != ADAPTER_FORMAT:
            raise AdapterConfigError(f"adapter config must be an object with format '{ADAPTER_FORMAT}'")
        fields = {k: v for k, v in doc.items() if k != "format"}
        unknown = set(fields) - {"channels", "layers", "kernel_size", "beta", "permutation", "metadata"}
        if unknown:
            raise AdapterConfigError(f"unknown adapter config field(s) {sorted(unknown)}")
        try:
            return cls(**fields)
        except TypeError as exc:
            raise AdapterConfigError(str(exc)) from None

    @classmethod
    def loads(cls, text: str | bytes) -> "AdapterConfig":
        try:
            return cls.from_json(json.loads(text))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AdapterConfigError(f"adapter config is not valid JSON: {exc}") from None
        except RecursionError:  # hostile nesting: a clear error, never the Python message
            raise AdapterConfigError("adapter config is not valid JSON: nested too deeply") from None
