"""maxpool2d and avgpool2d. Both pseudo-backpropagate as avg-pool' (paper: max-pool' -> avg-pool')."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from transplant.spec.nodes import Node, Shape, SpecError
from transplant.spec.ops.base import Attr, Op, ReluMasks, conv_out, output_padding, positive, register, spatial

_ATTRS = {"kernel_size": Attr(minimum=1), "stride": Attr(minimum=1, default=None), "padding": Attr(default=0)}


def _resolve(attrs: dict[str, Any]) -> dict[str, Any]:
    """No stride: the kernel size (torch's default), written into the node."""
    return {**attrs, "stride": attrs["kernel_size"] if attrs["stride"] is None else attrs["stride"]}


def _check(node: Node) -> None:
    a = node.attrs
    if 2 * a["padding"] > a["kernel_size"]:
        raise SpecError(f"node '{node.name}': padding must be at most half the kernel size")


def _shape(node: Node, ins: list[Shape]) -> Shape:
    a = node.attrs
    c, h, w = spatial(node, ins[0])
    args = (a["kernel_size"], a["stride"], a["padding"], 1)
    return positive(node, (c, conv_out(h, *args), conv_out(w, *args)))


def _avg(node: Node, layer: nn.Module | None, ins: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    return F.avg_pool2d(ins[0], a["kernel_size"], a["stride"], a["padding"])


def _max(node: Node, layer: nn.Module | None, ins: list[torch.Tensor]) -> torch.Tensor:
    a = node.attrs
    return F.max_pool2d(ins[0], a["kernel_size"], a["stride"], a["padding"])


def _adjoint(g: torch.Tensor, node: Node, in_shape: Sequence[int]) -> torch.Tensor:
    """Adjoint of avg-pool (count_include_pad): a depthwise transposed conv with a 1/k^2 kernel."""
    a = node.attrs
    channels, k, s, p = g.shape[1], a["kernel_size"], a["stride"], a["padding"]
    kernel = torch.full((channels, 1, k, k), 1.0 / (k * k), dtype=g.dtype, device=g.device)
    pad = output_padding(g.shape[-2:], in_shape[-2:], k, s, p, 1)
    return F.conv_transpose2d(g, kernel, stride=s, padding=p, output_padding=pad, groups=channels)


def _backward(node: Node, layer: nn.Module | None, g: torch.Tensor, in_shapes: list[Shape],
              masks: ReluMasks) -> list[torch.Tensor]:
    return [_adjoint(g, node, in_shapes[0])]


register(Op("maxpool2d", attrs=_ATTRS, resolve=_resolve, check=_check, shape=_shape, forward=_max, backward=_backward,
            linearised=lambda node, layer, ins, masks: _avg(node, layer, ins), channelwise=True))
register(Op("avgpool2d", attrs=_ATTRS, resolve=_resolve, check=_check, shape=_shape, forward=_avg, backward=_backward,
            channelwise=True))
