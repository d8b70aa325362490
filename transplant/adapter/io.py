"""Adapters saved like peft adapters: adapter_config.json + adapter_model.safetensors."""
from __future__ import annotations

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


def adapter_from_bytes(config_json: str | bytes, weights: bytes) -> Adapter:
    """Rebuild an adapter, checking every tensor's name, shape, dtype and finiteness."""
    config = AdapterConfig.loads(config_json)
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
