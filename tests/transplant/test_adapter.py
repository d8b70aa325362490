"""Adapters: validated config, peft-style files, and h' = the VJP of the linearised adapter."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from transplant.adapter import (CONFIG_NAME, WEIGHTS_NAME, Adapter, AdapterConfig, AdapterConfigError,
                                adapter_from_bytes, adapter_to_bytes, load_adapter, save_adapter)


@pytest.mark.parametrize("layers, kernel", [(1, 1), (1, 3), (3, 3)])
def test_pseudo_backward_is_the_vjp_of_the_adapter_without_relus(layers, kernel):
    perm = tuple(torch.randperm(6, generator=torch.Generator().manual_seed(0)).tolist())
    adapter = Adapter(AdapterConfig(channels=6, layers=layers, kernel_size=kernel, beta=0.7, permutation=perm),
                      torch.Generator().manual_seed(1)).double()
    x = torch.rand(2, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    y = adapter.pre(x)
    for conv in adapter.convs:  # ReLU' -> identity (dummy_1st)
        y = conv(y)
    g = torch.randn_like(y)
    reference, = torch.autograd.grad(y, x, g)
    assert torch.allclose(adapter.pseudo_backward(g), reference, atol=1e-12)


def test_reorder_and_rescale():
    adapter = Adapter(AdapterConfig(channels=3, beta=2.0, permutation=(2, 0, 1)))
    x = torch.arange(3.0).view(1, 3, 1, 1)
    assert adapter.pre(x).flatten().tolist() == [4.0, 0.0, 2.0]


def test_saved_like_a_peft_adapter(tmp_path):
    adapter = Adapter(AdapterConfig(channels=4, layers=3, kernel_size=3, beta=1.5, permutation=(1, 0, 3, 2)))
    folder = save_adapter(adapter, tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    assert json.loads((folder / CONFIG_NAME).read_text())["layers"] == 3
    loaded = load_adapter(folder)
    x = torch.rand(2, 4, 6, 6)
    assert torch.equal(loaded(x), adapter(x)) and loaded.config == adapter.config


@pytest.mark.parametrize("fields, message", [
    ({"channels": 0}, "channels"), ({"channels": 4, "layers": 0}, "layers"),
    ({"channels": 4, "kernel_size": 5}, "kernel_size"), ({"channels": 4, "beta": float("nan")}, "beta"),
    ({"channels": 3, "permutation": [0, 0, 1]}, "permutation"),
])
def test_config_errors(fields, message):
    with pytest.raises(AdapterConfigError, match=message):
        AdapterConfig(**fields)


def test_malformed_adapter_payloads():
    adapter = Adapter(AdapterConfig(channels=4))
    config_json, weights = adapter_to_bytes(adapter)
    with pytest.raises(AdapterConfigError, match="format"):
        adapter_from_bytes('{"channels": 4}', weights)
    with pytest.raises(AdapterConfigError, match="not valid JSON"):
        adapter_from_bytes("{", weights)
    nan = {k: torch.full_like(v, float("nan")) for k, v in adapter.state_dict().items()}
    with pytest.raises(AdapterConfigError, match="NaN"):
        adapter_from_bytes(config_json, st_save(nan))
    with pytest.raises(AdapterConfigError, match="the config needs"):
        adapter_from_bytes(AdapterConfig(channels=5).dumps(), weights)
    with pytest.raises(AdapterConfigError, match="category module outputs 8"):
        adapter_from_bytes(config_json, weights, channels=8)
    with pytest.raises(AdapterConfigError, match="safetensors"):
        adapter_from_bytes(config_json, weights[:20])


def test_a_small_config_asking_for_a_huge_adapter_is_refused_before_allocating():
    """84 bytes of config for 4096 channels x 2 layers of 3x3 convs (2.4 GB of weights) with a tiny
    payload: refused from the safetensors header, in milliseconds, without building the adapter."""
    import time
    import tracemalloc

    bomb = AdapterConfig(channels=4096, layers=2, kernel_size=3).dumps()
    _, weights = adapter_to_bytes(Adapter(AdapterConfig(channels=4)))
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(AdapterConfigError, match="the config needs"):
        adapter_from_bytes(bomb, weights)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5 and peak < 10_000_000
