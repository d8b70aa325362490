"""Pseudo-gradients D' of spec'd task modules (paper Eqn. 4b).

D' = B(G) replaces, in the backward pass only: ReLU' by identity (dummy_1st) or by a fixed
random mask 1(x_rand > 0) (dummy_2nd); max-pool' by avg-pool'; dropout by identity. Convs
back-propagate as transposed convs with the same weights, linears as W^T. So D' is linear in
G and depends on no feature map: it is computed here from weights alone, without autograd.

`linearised_surrogate` is the reference: a forward net whose ordinary VJP equals B(G).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence, cast

import torch
from torch import nn
from torch.nn import functional as F

from transplant.spec.build import SpecModule
from transplant.spec.schema import INPUT, ModuleSpec, Node, SpecError
from transplant.spec.shapes import infer_shapes

DUMMY_1ST = "dummy_1st"
DUMMY_2ND = "dummy_2nd"
ReluMasks = Mapping[str, torch.Tensor]


def _pool_adjoint(g: torch.Tensor, a: dict, in_shape: Sequence[int]) -> torch.Tensor:
    """Adjoint of avg-pool (count_include_pad): a depthwise transposed conv with a 1/k^2 kernel."""
    channels, k, s, p = g.shape[1], a["kernel_size"], a["stride"], a["padding"]
    kernel = torch.full((channels, 1, k, k), 1.0 / (k * k), dtype=g.dtype, device=g.device)
    pad = _output_padding(g.shape[-2:], in_shape[-2:], k, s, p, 1)
    return F.conv_transpose2d(g, kernel, stride=s, padding=p, output_padding=pad, groups=channels)


def _output_padding(out_hw: Sequence[int], in_hw: Sequence[int], k: int, s: int, p: int, d: int) -> tuple:
    return tuple(int(i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)) for o, i in zip(out_hw, in_hw))


def _weight(module: SpecModule, node: Node) -> torch.Tensor:
    """The weight of a conv or linear node's layer (nn.ModuleDict yields plain Modules)."""
    return cast(torch.Tensor, module.layers[node.name].weight)


def _node_adjoint(module: SpecModule, node: Node, g: torch.Tensor, in_shapes: list[tuple],
                  masks: ReluMasks) -> list[torch.Tensor]:
    """Pseudo-backward of one node: the gradient for each of its inputs."""
    a, op = node.attrs, node.op
    if op == "conv2d":
        w = _weight(module, node)
        pad = _output_padding(g.shape[-2:], in_shapes[0][-2:], a["kernel_size"], a["stride"], a["padding"],
                              a["dilation"])
        return [F.conv_transpose2d(g, w, stride=a["stride"], padding=a["padding"], output_padding=pad,
                                   dilation=a["dilation"])]
    if op == "conv_transpose2d":
        w = _weight(module, node)
        return [F.conv2d(g, w, stride=a["stride"], padding=a["padding"], dilation=a["dilation"])]
    if op == "linear":
        return [g @ _weight(module, node)]
    if op == "relu":
        return [g * masks[node.name] if node.name in masks else g]
    if op in ("maxpool2d", "avgpool2d"):
        return [_pool_adjoint(g, a, in_shapes[0])]
    if op == "flatten":
        return [g.reshape(g.shape[0], *in_shapes[0])]
    if op == "batchnorm2d":
        bn = cast(nn.BatchNorm2d, module.layers[node.name])
        assert bn.running_var is not None  # specs build BatchNorm2d with running statistics
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return [g * scale.view(1, -1, 1, 1)]
    if op == "dropout":
        return [g]
    if op == "add":
        return [g] * len(node.inputs)
    if op == "crop":
        full = g.new_zeros((g.shape[0], *in_shapes[0]))
        off, (height, width) = a["offset"], g.shape[-2:]
        full[:, :, off:off + height, off:off + width] = g
        return [full] + ([g.new_zeros((g.shape[0], *in_shapes[1]))] if len(in_shapes) > 1 else [])
    raise SpecError(f"node '{node.name}': no pseudo-backward for {op}")


def pseudo_backward(module: SpecModule, grad_out: torch.Tensor, relu_masks: ReluMasks | None = None,
                    input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """D' at the module's input for a batch of output gradients G (shape [B, *output_shape]).

    ReLUs named in `relu_masks` use dummy_2nd with that mask; all others use dummy_1st.
    `input_shape` lets a fully convolutional module run at an enlarged size.
    """
    spec = module.spec
    shapes = infer_shapes(spec, input_shape)
    if tuple(grad_out.shape[1:]) != shapes[spec.output]:
        raise SpecError(f"G has shape {list(grad_out.shape[1:])}, the module outputs {list(shapes[spec.output])}")
    grads: dict[str, torch.Tensor] = {spec.output: grad_out}
    for node in reversed(spec.nodes):
        g = grads.pop(node.name, None)
        if g is None:
            continue
        in_shapes = [shapes[s] for s in node.inputs]
        for src, gi in zip(node.inputs, _node_adjoint(module, node, g, in_shapes, relu_masks or {})):
            grads[src] = grads[src] + gi if src in grads else gi
    return grads[INPUT]


def linearised_surrogate(module: SpecModule, relu_masks: ReluMasks | None = None
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward net whose VJP is D': ReLU -> identity or a fixed mask, max-pool -> avg-pool, no dropout."""
    masks = relu_masks or {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: x}
        for node in module.spec.nodes:
            ins = [values[s] for s in node.inputs]
            if node.op == "relu":
                out = ins[0] * masks[node.name] if node.name in masks else ins[0]
            elif node.op == "maxpool2d":
                a = node.attrs
                out = F.avg_pool2d(ins[0], a["kernel_size"], a["stride"], a["padding"])
            elif node.op == "dropout":
                out = ins[0]
            else:
                out = module.apply_node(node, ins)
            values[node.name] = out
        return values[module.spec.output]

    return forward


def relu_nodes(spec: ModuleSpec) -> list[str]:
    return [n.name for n in spec.nodes if n.op == "relu"]


def draw_relu_masks(spec: ModuleSpec, nodes: Sequence[str], batch: int, generator: torch.Generator,
                    p_ones: float = 0.2, share_channels: bool = False,
                    input_shape: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Random dummy_2nd masks 1(x_rand > 0), one per draw, with a fraction p_ones of ones.

    With `share_channels`, one 2-D mask x' is repeated over all channels (paper Exp.2).
    """
    shapes = infer_shapes(spec, input_shape)
    masks = {}
    for name in nodes:
        shape = shapes[name]
        draw_shape = (batch, 1, *shape[1:]) if share_channels and len(shape) == 3 else (batch, *shape)
        masks[name] = (torch.rand(draw_shape, generator=generator) < p_ones).float()
    return masks
