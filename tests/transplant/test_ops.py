"""The op registry: a layer type is one registration that the schema, shapes, builder and
pseudo-gradients all read; its pseudo-backward is checked against autograd like the built-in ones."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from transplant.pseudograd import linearised_surrogate, pseudo_backward
from transplant.spec import LAYER_TYPES, ModuleSpec, SpecError, build_module, infer_shapes, parameter_shapes
from transplant.spec.ops import OPS, Attr, Op, get_op, register
from transplant.spec.ops.base import same_shape


def test_every_built_in_op_is_registered_once() -> None:
    assert set(LAYER_TYPES) == {"conv2d", "conv_transpose2d", "relu", "maxpool2d", "avgpool2d", "linear", "flatten",
                                "dropout", "batchnorm2d", "add", "crop"}
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(get_op("relu")))
    with pytest.raises(SpecError, match="unknown layer type 'gelu'; known: conv2d"):
        get_op("gelu")
    with pytest.raises(ValueError, match="need a layer"):
        register(dataclasses.replace(get_op("relu"), name="relu_with_params", params=lambda a: {"w": (1,)}))
    assert "relu_with_params" not in OPS


class ChannelScale(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


def _scale_shape(node, ins):
    if ins[0][0] != node.attrs["channels"]:
        raise SpecError(f"node '{node.name}': expects {node.attrs['channels']} channels, got {ins[0][0]}")
    return same_shape(node, ins)


@pytest.fixture
def channel_scale() -> Iterator[Op]:
    """A made-up op: a learnt per-channel scale (linear, so its pseudo-backward is its true backward)."""
    op = register(Op(
        "channel_scale", attrs={"channels": Attr(minimum=1)}, shape=_scale_shape,
        forward=lambda node, layer, ins: layer(ins[0]),
        backward=lambda node, layer, g, in_shapes, masks: [g * layer.weight.view(1, -1, 1, 1)],
        params=lambda a: {"weight": (a["channels"],)}, layer=lambda a: ChannelScale(a["channels"])))
    try:
        yield op
    finally:
        del OPS[op.name]


def _doc(scale_attrs: dict) -> dict:
    return {"format": "transplant.module.v1", "name": "toy", "input_shape": [3, 8, 8], "output": "out", "nodes": [
        {"name": "conv", "op": "conv2d", "inputs": ["input"], "attrs": {"in_channels": 3, "out_channels": 4,
                                                                         "kernel_size": 3, "padding": 1}},
        {"name": "scale", "op": "channel_scale", "inputs": ["conv"], "attrs": scale_attrs},
        {"name": "relu", "op": "relu", "inputs": ["scale"]},
        {"name": "pool", "op": "maxpool2d", "inputs": ["relu"], "attrs": {"kernel_size": 2}},
        {"name": "out", "op": "conv2d", "inputs": ["pool"], "attrs": {"in_channels": 4, "out_channels": 2,
                                                                       "kernel_size": 1}}]}


def test_a_new_op_is_one_registration(channel_scale: Op) -> None:
    spec = ModuleSpec.from_json(_doc({"channels": 4}))
    assert infer_shapes(spec)["scale"] == (4, 8, 8)
    assert parameter_shapes(spec)["scale.weight"] == (4,)
    with pytest.raises(SpecError, match="missing attribute 'channels'"):
        ModuleSpec.from_json(_doc({}))
    with pytest.raises(SpecError, match="expects 5 channels, got 4"):
        ModuleSpec.from_json(_doc({"channels": 5}))
    with pytest.raises(SpecError, match="'channels'=0 is out of range"):
        ModuleSpec.from_json(_doc({"channels": 0}))

    torch.manual_seed(0)
    weights = {name: torch.randn(shape) for name, shape in parameter_shapes(spec).items()}
    module = build_module(spec, weights).double()
    assert torch.equal(module.weights()["scale.weight"], weights["scale.weight"].double())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    G = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    reference, = torch.autograd.grad((linearised_surrogate(module)(x) * G).sum(), x)
    assert torch.allclose(pseudo_backward(module, G), reference, atol=1e-10)
