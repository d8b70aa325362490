"""Adapters saved like peft adapters: adapter_config.json + adapter_model.safetensors."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from transplant.adapter.config import AdapterConfig, AdapterConfigError
from transplant.adapter.layer import Adapter

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def adapter_weights(adapter: Adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in adapter.state_dict().items()}


def adapter_to_bytes(adapter: Adapter) -> tuple[str, bytes]:
    """(config JSON, safetensors bytes): what travels and what is stored."""
    return adapter.config.dumps(), st_save(adapter_weights(adapter))


MAX_HEADER_BYTES = 1 << 20  # an adapter's safetensors header lists a few tensors: far below this


def expected_shapes(config: AdapterConfig) -> dict[str, list[int]]:
    """The tensors an adapter of `config` holds, computed without allocating any of them."""
    m, k = config.channels, config.kernel_size
    shapes: dict[str, list[int]] = {}
    for i in range(config.layers):
        shapes[f"convs.{i}.weight"], shapes[f"convs.{i}.bias"] = [m, m, k, k], [m]
    return shapes


def declared_shapes(weights: bytes) -> dict[str, list[int]]:
    """Tensor shapes a safetensors payload declares in its header (the data itself is not read)."""
    if len(weights) < 8:
        raise AdapterConfigError("adapter weights are not a valid safetensors file: shorter than its header")
    size = int.from_bytes(weights[:8], "little")
    if size > min(MAX_HEADER_BYTES, len(weights) - 8):
        raise AdapterConfigError(f"adapter weights are not a valid safetensors file: header of {size} bytes")
    try:
        header = json.loads(weights[8:8 + size])
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise AdapterConfigError(f"adapter weights are not a valid safetensors file: bad header ({exc})") from None


def adapter_from_bytes(config_json: str | bytes, weights: bytes, channels: int | None = None) -> Adapter:
    """Rebuild an adapter, checking every tensor's name, shape, dtype and finiteness.

    Shapes are checked against the safetensors header before anything is allocated, so a small
    config asking for a huge adapter costs only what its payload holds; `channels`, when given,
    must match (the category module the adapter will read)."""
    config = AdapterConfig.loads(config_json)
    if channels is not None and config.channels != channels:
        raise AdapterConfigError(f"adapter has {config.channels} channels, the category module outputs {channels}")
    wanted, declared = expected_shapes(config), declared_shapes(weights)
    if declared != wanted:
        raise AdapterConfigError(f"adapter weights declare {declared}, the config needs {wanted}")
    adapter = Adapter(config)
    try:
        tensors = st_load(weights)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise AdapterConfigError(f"adapter weights are not a valid safetensors file: {exc}") from None
    expected = adapter.state_dict()
    if set(tensors) != set(expected):
        raise AdapterConfigError(f"adapter weights hold {sorted(tensors)}, expected {sorted(expected)}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != torch.float32:
            raise AdapterConfigError(f"adapter tensor '{name}' is {tensor.dtype} {list(tensor.shape)}, "
                                     f"expected float32 {list(expected[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise AdapterConfigError(f"adapter tensor '{name}' holds NaN or Inf values")
    adapter.load_state_dict(tensors)
    return adapter.eval()


def save_adapter(adapter: Adapter, directory: Path | str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_json, weights = adapter_to_bytes(adapter)
    (directory / CONFIG_NAME).write_text(config_json)
    (directory / WEIGHTS_NAME).write_bytes(weights)
    return directory


def load_adapter(directory: Path | str) -> Adapter:
    directory = Path(directory)
    return adapter_from_bytes((directory / CONFIG_NAME).read_text(), (directory / WEIGHTS_NAME).read_bytes())
