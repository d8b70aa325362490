"""Pseudo-gradients D' of spec'd task modules (paper Eqn. 4b).

D' = B(G) replaces, in the backward pass only: ReLU' by identity (dummy_1st) or by a fixed
random mask 1(x_rand > 0) (dummy_2nd); max-pool' by avg-pool'; dropout by identity. Convs
back-propagate as transposed convs with the same weights, linears as W^T. So D' is linear in
G and depends on no feature map: it is computed here from weights alone, without autograd,
walking the graph backwards through each op's `backward` (transplant.spec.ops).

`linearised_surrogate` is the reference: a forward net whose ordinary VJP equals B(G).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from transplant.spec.build import SpecModule
from transplant.spec.ops import ReluMasks, get_op
from transplant.spec.schema import INPUT, ModuleSpec, Node, SpecError
from transplant.spec.shapes import infer_shapes

DUMMY_1ST = "dummy_1st"
DUMMY_2ND = "dummy_2nd"
__all__ = ["DUMMY_1ST", "DUMMY_2ND", "ReluMasks", "draw_relu_masks", "linearised_surrogate", "pseudo_backward",
           "relu_nodes"]


def _layer(module: SpecModule, node: Node) -> nn.Module | None:
    return module.layers[node.name] if node.name in module.layers else None


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
        backward = get_op(node.op).backward(node, _layer(module, node), g, in_shapes, relu_masks or {})
        for src, gi in zip(node.inputs, backward):
            grads[src] = grads[src] + gi if src in grads else gi
    return grads[INPUT]


def linearised_surrogate(module: SpecModule, relu_masks: ReluMasks | None = None
                         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward net whose VJP is D': each op's `linearised` forward (ReLU -> identity or a fixed mask,
    max-pool -> avg-pool, no dropout), else its ordinary one."""
    masks = relu_masks or {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        values = {INPUT: x}
        for node in module.spec.nodes:
            ins = [values[s] for s in node.inputs]
            linearised = get_op(node.op).linearised
            values[node.name] = (module.apply_node(node, ins) if linearised is None
                                 else linearised(node, _layer(module, node), ins, masks))
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
