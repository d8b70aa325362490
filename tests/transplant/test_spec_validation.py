"""Specs: every validation error names its problem; spec + safetensors round-trips exactly."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save as st_save

from transplant.architectures import CLASSIFICATION, SEGMENTATION, teacher_specs, vgg_small
from transplant.spec import (ModuleSpec, SpecError, WeightsError, build_module, load_module, parse_spec,
                             save_module, weights_from_bytes, weights_to_bytes)

SMALL = vgg_small(width=4, depth=3, image_size=16, in_channels=1)


def tiny_doc() -> dict:
    return {
        "format": "transplant.module.v1", "name": "tiny", "input_shape": [2, 8, 8],
        "nodes": [
            {"name": "conv", "op": "conv2d", "inputs": ["input"],
             "attrs": {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}},
            {"name": "relu", "op": "relu", "inputs": ["conv"]},
            {"name": "pool", "op": "maxpool2d", "inputs": ["relu"], "attrs": {"kernel_size": 2}},
            {"name": "flat", "op": "flatten", "inputs": ["pool"]},
            {"name": "fc", "op": "linear", "inputs": ["flat"], "attrs": {"in_features": 48, "out_features": 1}},
        ],
        "output": "fc",
    }


def mutate(change) -> dict:
    doc = copy.deepcopy(tiny_doc())
    change(doc)
    return doc


def test_tiny_doc_is_valid():
    spec = parse_spec(tiny_doc())
    assert [n.name for n in spec.nodes] == ["conv", "relu", "pool", "flat", "fc"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["nodes"][1].update(op="gelu"), "unknown layer type 'gelu'"),
    (lambda d: d["nodes"][0].update(inputs=["fc"]), "cycle"),
    (lambda d: d["nodes"][0]["attrs"].update(in_channels=5), "expects 5 input channels, got 2"),
    (lambda d: d["nodes"][4]["attrs"].update(in_features=47), "expects a flat input of 47 features"),
    (lambda d: d["nodes"][1].update(name="conv"), "duplicate node name 'conv'"),
    (lambda d: d["nodes"][2].update(inputs=["nowhere"]), "input 'nowhere' is not a node"),
    (lambda d: d["nodes"][0]["attrs"].pop("kernel_size"), "missing attribute 'kernel_size'"),
    (lambda d: d["nodes"][0]["attrs"].update(stride=0), "'stride'=0 is out of range"),
    (lambda d: d["nodes"][0]["attrs"].update(groups=2), "unknown attribute(s) ['groups']"),
    (lambda d: d["nodes"][0]["attrs"].update(kernel_size="3"), "must be an integer"),
    (lambda d: d.update(output="missing"), "output 'missing' is not a node"),
    (lambda d: d.update(format="other"), "spec format must be"),
    (lambda d: d.update(input_shape=[2, 8]), "input_shape must be [C, H, W]"),
    (lambda d: d.update(nodes=[]), "non-empty list of nodes"),
    (lambda d: d["nodes"].append({"name": "dead", "op": "relu", "inputs": ["conv"]}), "do not contribute"),
    (lambda d: d["nodes"][3].update(op="add", inputs=["pool"]), "takes 2..16 input(s)"),
    (lambda d: d["nodes"][2]["attrs"].update(kernel_size=64), "empty (input too small)"),
    (lambda d: d["nodes"][0].update(name="in put"), "invalid name"),
])
def test_each_validation_error_names_the_problem(change, message):
    with pytest.raises(SpecError) as info:
        parse_spec(mutate(change))
    assert message in str(info.value)


def test_parameter_count_over_limit_is_refused():
    with pytest.raises(SpecError, match="parameters, over the limit of 100"):
        parse_spec(tiny_doc(), max_params=100)


def test_invalid_json_and_oversized_text():
    with pytest.raises(SpecError, match="not valid JSON"):
        ModuleSpec.loads("{nope")
    with pytest.raises(SpecError, match="over the limit"):
        ModuleSpec.loads(" " * (2 << 20))


@pytest.mark.parametrize("task", [CLASSIFICATION, SEGMENTATION])
def test_round_trip_spec_and_safetensors_gives_same_outputs(task, tmp_path):
    torch.manual_seed(0)
    spec = teacher_specs(SMALL).tasks[task]
    module = build_module(spec)
    text, data = spec.dumps(), weights_to_bytes(module)
    rebuilt = build_module(ModuleSpec.loads(text), weights_from_bytes(data, ModuleSpec.loads(text)))
    x = torch.rand(3, *spec.input_shape)
    assert torch.equal(module(x), rebuilt(x))
    loaded = load_module(save_module(module, tmp_path / "m"))
    assert torch.equal(module(x), loaded(x))
    assert json.loads(text) == spec.to_json()


def test_weights_errors_name_the_tensor():
    spec = parse_spec(tiny_doc())
    good = build_module(spec).weights()
    cases = [
        ({k: v for k, v in good.items() if k != "fc.bias"}, "miss tensor(s) ['fc.bias']"),
        ({**good, "extra": torch.zeros(1)}, "unexpected tensor(s) ['extra']"),
        ({**good, "conv.weight": torch.zeros(3, 2, 5, 5)}, "'conv.weight' has shape [3, 2, 5, 5]"),
        ({**good, "fc.bias": torch.zeros(1, dtype=torch.float64)}, "'fc.bias' has dtype F64"),
        ({**good, "fc.weight": torch.full((1, 48), float("nan"))}, "'fc.weight' holds NaN or Inf"),
    ]
    for tensors, message in cases:
        with pytest.raises(WeightsError) as info:
            weights_from_bytes(st_save(tensors), spec)
        assert message in str(info.value)
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        weights_from_bytes(b"\x80\x04pickle-bytes", spec)
    truncated = st_save(good)[:-10]
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        weights_from_bytes(truncated, spec)


def test_weights_in_a_buffer_are_read_in_place_and_checked_alike():
    """A download's bytearray is read without a copy (the tensors are views of it); a NaN or a wrong shape
    in it is refused just as in bytes; a header whose length leaves the data unaligned is copied, not viewed."""
    spec = parse_spec(tiny_doc())
    module = build_module(spec)
    data = bytearray(weights_to_bytes(module))
    tensors = weights_from_bytes(data, spec)
    start = torch.frombuffer(data, dtype=torch.uint8).data_ptr()
    for name, tensor in tensors.items():
        assert start <= tensor.data_ptr() < start + len(data), f"{name} was copied"
        assert torch.equal(tensor, module.weights()[name])
    x = torch.rand(2, *spec.input_shape)
    assert torch.equal(build_module(spec, tensors)(x), module(x))
    poisoned = {k: v.clone() for k, v in module.weights().items()}
    poisoned["fc.bias"][0] = float("nan")
    with pytest.raises(WeightsError, match="NaN or Inf"):
        weights_from_bytes(bytearray(st_save(poisoned)), spec)
    header_length = int.from_bytes(data[:8], "little")
    shifted = bytearray((header_length + 1).to_bytes(8, "little")) + data[8:8 + header_length] + b" " + data[8 + header_length:]
    for name, tensor in weights_from_bytes(shifted, spec).items():
        assert torch.equal(tensor, module.weights()[name])


def test_json_nested_100000_deep_is_a_clear_error():
    """Hostile nesting is refused like any malformed document, without Python's recursion message."""
    from transplant.adapter import AdapterConfig, AdapterConfigError

    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(SpecError, match="nested too deeply") as spec_error:
        ModuleSpec.loads(deep)  # about 0.8 MB: under the size limit, so the parser sees it
    with pytest.raises(AdapterConfigError, match="nested too deeply") as adapter_error:
        AdapterConfig.loads(deep)
    for error in (spec_error, adapter_error):
        assert "recursion" not in str(error.value)
