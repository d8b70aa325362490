"""The op registry of the spec language: one `Op` per layer type holds everything about it.

An op declares its attributes (types, ranges, defaults) and arity, the cross-attribute rules, its
shape rule, the parameters its weights file holds, the torch layer that owns them, its forward and
its pseudo-backward (paper Eqn. 4b: ReLU' -> identity or a fixed mask, max-pool' -> avg-pool', convs
as transposed convs). Schema, shape inference, the builder and the pseudo-gradients all read this,
so a new layer type is one `register(Op(...))` (plus its test against autograd).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transplant.spec.nodes import Node, Shape, SpecError

ReluMasks = Mapping[str, torch.Tensor]  # ReLU node -> fixed dummy_2nd mask (others: dummy_1st)
MAX_INT_ATTR = 1 << 20
REQUIRED = object()  # an attribute's default when it has none


@dataclass(frozen=True)
class Attr:
    """One attribute: "int" (in [minimum, 2^20]; None allowed only as the default), "bool",
    "fraction" (in [0, 1)) or "eps" (in (0, 1))."""

    kind: str = "int"
    minimum: int = 0
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


Forward = Callable[[Node, "nn.Module | None", list[torch.Tensor]], torch.Tensor]
Backward = Callable[[Node, "nn.Module | None", torch.Tensor, list[Shape], ReluMasks], list[torch.Tensor]]
Linearised = Callable[[Node, "nn.Module | None", list[torch.Tensor], ReluMasks], torch.Tensor]


def _no_params(attrs: dict[str, Any]) -> dict[str, Shape]:
    return {}


@dataclass(frozen=True)
class Op:
    name: str
    shape: Callable[[Node, list[Shape]], Shape]      # output shape from the input shapes (SpecError if wrong)
    forward: Forward                                 # (node, its layer or None, inputs) -> output
    backward: Backward                               # pseudo-gradient of each input from the output's G
    attrs: dict[str, Attr] = field(default_factory=dict)
    arity: tuple[int, int] = (1, 1)                  # inputs, at least .. at most
    resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # defaults that follow other attributes
    check: Callable[[Node], None] | None = None      # rules across attributes and inputs
    params: Callable[[dict[str, Any]], dict[str, Shape]] = _no_params  # param -> shape (`<node>.<param>`)
    layer: Callable[[dict[str, Any]], nn.Module] | None = None  # the torch layer owning the params
    linearised: Linearised | None = None             # forward of the surrogate whose VJP is `backward`
    pointwise: bool = False                          # elementwise, shape-preserving (fine after a flatten)
    channelwise: bool = False                        # each channel alone: commutes with a channel permutation


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add a layer type; a name is registered once."""
    if not op.name or op.name in OPS:
        raise ValueError(f"op {op.name!r} is {'already registered' if op.name else 'unnamed'}")
    if op.layer is None and op.params is not _no_params:
        raise ValueError(f"op '{op.name}': parameters need a layer that owns them")
    OPS[op.name] = op
    return op


def get_op(name: str) -> Op:
    if name not in OPS:
        raise SpecError(f"unknown layer type {name!r}; known: {', '.join(OPS)}")
    return OPS[name]


def check_attrs(name: str, op: Op, attrs: Any) -> dict[str, Any]:
    """The node's attributes validated against the op's declaration, defaults filled in."""
    if not isinstance(attrs, dict):
        raise SpecError(f"node '{name}': attrs must be an object")
    unknown = set(attrs) - set(op.attrs)
    if unknown:
        raise SpecError(f"node '{name}' ({op.name}): unknown attribute(s) {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, attr in op.attrs.items():  # required ones first, as declared
        if attr.required:
            if key not in attrs:
                raise SpecError(f"node '{name}' ({op.name}): missing attribute '{key}'")
            out[key] = _check_value(name, key, attrs[key], attr)
    for key, attr in op.attrs.items():
        if not attr.required:
            out[key] = _check_value(name, key, attrs.get(key, attr.default), attr)
    return op.resolve(out) if op.resolve else out


def _check_value(node: str, key: str, value: Any, attr: Attr) -> Any:
    if attr.kind == "bool":
        if not isinstance(value, bool):
            raise SpecError(f"node '{node}': attribute '{key}' must be true or false")
        return value
    if attr.kind in ("fraction", "eps"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise SpecError(f"node '{node}': attribute '{key}' must be a number in [0, 1)")
        if attr.kind == "eps" and value <= 0:
            raise SpecError(f"node '{node}': attribute '{key}' must be positive")
        return float(value)
    if value is None and attr.default is None:  # None only where None is the default
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"node '{node}': attribute '{key}' must be an integer, got {value!r}")
    if value < attr.minimum or value > MAX_INT_ATTR:
        raise SpecError(f"node '{node}': attribute '{key}'={value} is out of range")
    return value


# ---- helpers the op files share ----
def spatial(node: Node, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise SpecError(f"node '{node.name}' ({node.op}): needs a [C, H, W] input, got {list(shape)}")
    return shape


def positive(node: Node, shape: Shape) -> Shape:
    if any(s <= 0 for s in shape):
        raise SpecError(f"node '{node.name}': output shape {list(shape)} is empty (input too small)")
    return shape


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_padding(out_hw: Sequence[int], in_hw: Sequence[int], k: int, s: int, p: int, d: int) -> tuple[int, ...]:
    """What a transposed conv must add to map an output of out_hw back onto in_hw exactly."""
    return tuple(int(i - ((o - 1) * s - 2 * p + d * (k - 1) + 1)) for o, i in zip(out_hw, in_hw))


def same_shape(node: Node, ins: list[Shape]) -> Shape:
    return ins[0]


def layer_forward(node: Node, layer: nn.Module | None, ins: list[torch.Tensor]) -> torch.Tensor:
    """Ops whose torch layer computes the forward itself."""
    assert layer is not None, f"node '{node.name}' has no layer"
    return layer(ins[0])


def weight(node: Node, layer: nn.Module | None) -> torch.Tensor:
    """The weight of a conv or linear node's layer (nn.ModuleDict yields plain Modules)."""
    assert layer is not None, f"node '{node.name}' has no layer"
    w = layer.weight
    assert isinstance(w, torch.Tensor)
    return w
