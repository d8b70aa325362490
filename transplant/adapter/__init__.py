"""Adapters: the only thing transplanting learns (config, layer, peft-style save/load)."""
from transplant.adapter.config import ADAPTER_FORMAT, AdapterConfig, AdapterConfigError
from transplant.adapter.io import (CONFIG_NAME, WEIGHTS_NAME, adapter_from_bytes, adapter_to_bytes, adapter_weights, load_adapter,
                                   save_adapter)
from transplant.adapter.layer import Adapter

__all__ = ["ADAPTER_FORMAT", "CONFIG_NAME", "WEIGHTS_NAME", "Adapter", "AdapterConfig", "AdapterConfigError", "adapter_from_bytes",
           "adapter_to_bytes", "adapter_weights", "load_adapter", "save_adapter"]
