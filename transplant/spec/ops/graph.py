"""add and crop: the ops that join branches (FCN's skip connections)."""
from __future__ import annotations

import torch
from torch import nn

from transplant.spec.nodes import Node, Shape, SpecError
from transplant.spec.ops.base import Attr, Op, ReluMasks, register, spatial

MAX_ADD_INPUTS = 16


# ---- add ----
def _add_shape(node: Node, ins: list[Shape]) -> Shape:
    if any(s != ins[0] for s in ins[1:]):
        raise SpecError(f"node '{node.name}': add needs equal shapes, got {[list(s) for s in ins]}")
    return ins[0]


def _add(node: Node, layer: nn.Module | None, ins: list[torch.Tensor]) -> torch.Tensor:
    out = ins[0]
    for other in ins[1:]:
        out = out + other
    return out


register(Op("add", arity=(2, MAX_ADD_INPUTS), shape=_add_shape, forward=_add,
            backward=lambda node, layer, g, in_shapes, masks: [g] * len(node.inputs)))


# ---- crop: to the 2nd input's H, W or to `size`, from `offset` ----
def _crop_check(node: Node) -> None:
    if (len(node.inputs) == 2) == (node.attrs["size"] is not None):
        raise SpecError(f"node '{node.name}' (crop): give either a reference input or a 'size', not both")


def _crop_shape(node: Node, ins: list[Shape]) -> Shape:
    a, x = node.attrs, ins[0]
    c, h, w = spatial(node, x)
    rh, rw = spatial(node, ins[1])[1:] if len(ins) == 2 else (a["size"], a["size"])
    off = a["offset"]
    if off + rh > h or off + rw > w:
        raise SpecError(f"node '{node.name}': cannot crop {list(x)} at offset {off} to {rh}x{rw}")
    return (c, rh, rw)


def _crop(node: Node, layer: nn.Module | None, ins: list[torch.Tensor]) -> torch.Tensor:
    a, x = node.attrs, ins[0]
    h, w = ins[1].shape[-2:] if len(ins) == 2 else (a["size"], a["size"])
    off = a["offset"]
    return x[:, :, off:off + h, off:off + w]


def _crop_backward(node: Node, layer: nn.Module | None, g: torch.Tensor, in_shapes: list[Shape],
                   masks: ReluMasks) -> list[torch.Tensor]:
    """G placed back where the crop took it from; the reference input gets none."""
    full = g.new_zeros((g.shape[0], *in_shapes[0]))
    off, (height, width) = node.attrs["offset"], g.shape[-2:]
    full[:, :, off:off + height, off:off + width] = g
    return [full] + ([g.new_zeros((g.shape[0], *in_shapes[1]))] if len(in_shapes) > 1 else [])


register(Op("crop", attrs={"offset": Attr(default=0), "size": Attr(minimum=1, default=None)}, arity=(1, 2),
            check=_crop_check, shape=_crop_shape, forward=_crop, backward=_crop_backward))
