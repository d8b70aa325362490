"""Adapters saved like peft adapters: adapter_config.json + adapter_model.safetensors."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save as st_save

from transplant.adapter.config import AdapterConfig, AdapterConfigError
from transplant.adapter.layer import Adapter
from transplant.spec.build import checked_tensors
from transplant.spec.tensorcheck import WeightsError, parse_header

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def adapter_weights(adapter: Adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in adapter.state_dict().items()}


def adapter_to_bytes(adapter: Adapter) -> tuple[str, bytes]:
    """(config JSON, safetensors bytes): what travels and what is stored."""
    return adapter.config.dumps(), st_save(adapter_weights(adapter))


def expected_shapes(config: AdapterConfig) -> dict[str, list[int]]:
    """The tensors an adapter of `config` holds, computed without allocating any of them."""
    m, k = config.channels, config.kernel_size
    shapes: dict[str, list[int]] = {}
    for i in range(config.layers):
        shapes[f"convs.{i}.weight"], shapes[f"convs.{i}.bias"] = [m, m, k, k], [m]
    return shapes


def declared_shapes(weights: bytes | bytearray) -> dict[str, list[int]]:
    """Tensor shapes a safetensors payload declares in its header (the data itself is not read)."""
    try:
        header = parse_header(weights)
    except WeightsError as exc:
        raise AdapterConfigError(f"adapter {exc}") from None
    return {name: list(t.shape) for name, t in header.tensors.items()}


def adapter_from_bytes(config_json: str | bytes, weights: bytes | bytearray,
                       channels: int | None = None) -> Adapter:
    """Rebuild an adapter, checking every tensor's name, shape, dtype and finiteness.

    Shapes are checked against the safetensors header before anything is allocated, so a small
    config asking for a huge adapter costs only what its payload holds; `channels`, when given,
    must match (the category module the adapter will read). The checks are transplant.spec.tensorcheck's."""
    config = AdapterConfig.loads(config_json)
    if channels is not None and config.channels != channels:
        raise AdapterConfigError(f"adapter has {config.channels} channels, the category module outputs {channels}")
    wanted, declared = expected_shapes(config), declared_shapes(weights)
    if declared != wanted:
        raise AdapterConfigError(f"adapter weights declare {declared}, the config needs {wanted}")
    try:
        tensors = checked_tensors(weights, wanted)
    except WeightsError as exc:
        raise AdapterConfigError(f"adapter {exc}") from None
    adapter = Adapter(config)
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
