"""linear, flatten, relu, dropout, batchnorm2d.

Pseudo-backward: ReLU' is the identity (dummy_1st) or a fixed random mask (dummy_2nd, the ReLUs named
in the masks); dropout is the identity; linear is W^T; batchnorm (eval) is its per-channel scale.
"""
from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from transplant.spec.nodes import Node, Shape, SpecError
from transplant.spec.ops.base import Attr, Op, ReluMasks, layer_forward, register, same_shape, spatial, weight


# ---- linear ----
def _linear_shape(node: Node, ins: list[Shape]) -> Shape:
    a, x = node.attrs, ins[0]
    if len(x) != 1 or x[0] != a["in_features"]:
        raise SpecError(f"node '{node.name}': expects a flat input of {a['in_features']} features, got {list(x)}")
    return (a["out_features"],)


register(Op(
    "linear", attrs={"in_features": Attr(minimum=1), "out_features": Attr(minimum=1),
                     "bias": Attr("bool", default=True)},
    shape=_linear_shape, forward=layer_forward,
    backward=lambda node, layer, g, in_shapes, masks: [g @ weight(node, layer)],
    params=lambda a: {"weight": (a["out_features"], a["in_features"]),
                      **({"bias": (a["out_features"],)} if a["bias"] else {})},
    layer=lambda a: nn.Linear(a["in_features"], a["out_features"], bias=a["bias"])))


# ---- flatten ----
register(Op(
    "flatten", shape=lambda node, ins: (math.prod(ins[0]),),
    forward=lambda node, layer, ins: ins[0].flatten(1),
    backward=lambda node, layer, g, in_shapes, masks: [g.reshape(g.shape[0], *in_shapes[0])]))


# ---- relu ----
def _relu_masked(node: Node, x: torch.Tensor, masks: ReluMasks) -> torch.Tensor:
    """dummy_2nd where a mask is given, else dummy_1st (the identity)."""
    return x * masks[node.name] if node.name in masks else x


register(Op(
    "relu", shape=same_shape, forward=lambda node, layer, ins: F.relu(ins[0]),
    pointwise=True, channelwise=True,
    backward=lambda node, layer, g, in_shapes, masks: [_relu_masked(node, g, masks)],
    linearised=lambda node, layer, ins, masks: _relu_masked(node, ins[0], masks)))


# ---- dropout ----
register(Op(
    "dropout", attrs={"p": Attr("fraction", default=0.5)}, shape=same_shape, forward=layer_forward,
    pointwise=True, channelwise=True,
    backward=lambda node, layer, g, in_shapes, masks: [g],
    linearised=lambda node, layer, ins, masks: ins[0],
    layer=lambda a: nn.Dropout(a["p"])))


# ---- batchnorm2d ----
def _bn_shape(node: Node, ins: list[Shape]) -> Shape:
    x = ins[0]
    if spatial(node, x)[0] != node.attrs["num_features"]:
        raise SpecError(f"node '{node.name}': expects {node.attrs['num_features']} channels, got {x[0]}")
    return x


def _bn_backward(node: Node, layer: nn.Module | None, g: torch.Tensor, in_shapes: list[Shape],
                 masks: ReluMasks) -> list[torch.Tensor]:
    bn = cast(nn.BatchNorm2d, layer)
    assert bn.running_var is not None  # specs build BatchNorm2d with running statistics
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return [g * scale.view(1, -1, 1, 1)]


register(Op(
    "batchnorm2d", attrs={"num_features": Attr(minimum=1), "eps": Attr("eps", default=1e-5)},
    shape=_bn_shape, forward=layer_forward, backward=_bn_backward,
    params=lambda a: {p: (a["num_features"],) for p in ("weight", "bias", "running_mean", "running_var")},
    layer=lambda a: nn.BatchNorm2d(a["num_features"], eps=a["eps"])))
