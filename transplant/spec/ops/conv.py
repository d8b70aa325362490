"""conv2d and conv_transpose2d: each back-propagates as the other with the same weights."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from transplant.spec.nodes import Node, Shape, SpecError
from transplant.spec.ops.base import (Attr, Op, ReluMasks, conv_out, layer_forward, output_padding, positive,
                                      register, spatial, weight)

_CHANNELS = {"in_channels": Attr(minimum=1), "out_channels": Attr(minimum=1), "kernel_size": Attr(minimum=1)}


def _in_channels(node: Node, x: Shape) -> tuple[int, int]:
    c, h, w = spatial(node, x)
    if c != node.attrs["in_channels"]:
        raise SpecError(f"node '{node.name}': expects {node.attrs['in_channels']} input channels, got {c}")
    return h, w


def _params(a: dict[str, Any], weight_shape: Shape) -> dict[str, Shape]:
    return {"weight": weight_shape, **({"bias": (a["out_channels"],)} if a["bias"] else {})}


# ---- conv2d ----
def _conv_shape(node: Node, ins: list[Shape]) -> Shape:
    a = node.attrs
    h, w = _in_channels(node, ins[0])
    args = (a["kernel_size"], a["stride"], a["padding"], a["dilation"])
    return positive(node, (a["out_channels"], conv_out(h, *args), conv_out(w, *args)))


def _conv_backward(node: Node, layer: nn.Module | None, g: torch.Tensor, in_shapes: list[Shape],
                   masks: ReluMasks) -> list[torch.Tensor]:
    a = node.attrs
    pad = output_padding(g.shape[-2:], in_shapes[0][-2:], a["kernel_size"], a["stride"], a["padding"], a["dilation"])
    return [F.conv_transpose2d(g, weight(node, layer), stride=a["stride"], padding=a["padding"],
                               output_padding=pad, dilation=a["dilation"])]


register(Op(
    "conv2d", attrs={**_CHANNELS, "stride": Attr(minimum=1, default=1), "padding": Attr(default=0),
                     "dilation": Attr(minimum=1, default=1), "bias": Attr("bool", default=True)},
    shape=_conv_shape, forward=layer_forward, backward=_conv_backward,
    params=lambda a: _params(a, (a["out_channels"], a["in_channels"], a["kernel_size"], a["kernel_size"])),
    layer=lambda a: nn.Conv2d(a["in_channels"], a["out_channels"], a["kernel_size"], a["stride"], a["padding"],
                              a["dilation"], bias=a["bias"])))


# ---- conv_transpose2d ----
def _deconv_out(size: int, kernel: int, stride: int, padding: int, out_pad: int, dilation: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + out_pad + 1


def _deconv_shape(node: Node, ins: list[Shape]) -> Shape:
    a = node.attrs
    h, w = _in_channels(node, ins[0])
    args = (a["kernel_size"], a["stride"], a["padding"], a["output_padding"], a["dilation"])
    return positive(node, (a["out_channels"], _deconv_out(h, *args), _deconv_out(w, *args)))


def _deconv_check(node: Node) -> None:
    a = node.attrs
    if a["output_padding"] >= max(a["stride"], a["dilation"]):
        raise SpecError(f"node '{node.name}': output_padding must be smaller than stride or dilation")


def _deconv_backward(node: Node, layer: nn.Module | None, g: torch.Tensor, in_shapes: list[Shape],
                     masks: ReluMasks) -> list[torch.Tensor]:
    a = node.attrs
    return [F.conv2d(g, weight(node, layer), stride=a["stride"], padding=a["padding"], dilation=a["dilation"])]


register(Op(
    "conv_transpose2d", attrs={**_CHANNELS, "stride": Attr(minimum=1, default=1), "padding": Attr(default=0),
                               "output_padding": Attr(default=0), "dilation": Attr(minimum=1, default=1),
                               "bias": Attr("bool", default=True)},
    check=_deconv_check, shape=_deconv_shape, forward=layer_forward, backward=_deconv_backward,
    params=lambda a: _params(a, (a["in_channels"], a["out_channels"], a["kernel_size"], a["kernel_size"])),
    layer=lambda a: nn.ConvTranspose2d(a["in_channels"], a["out_channels"], a["kernel_size"], a["stride"],
                                       a["padding"], a["output_padding"], bias=a["bias"], dilation=a["dilation"])))
