"""Shape inference and parameter counting for module specs (no torch needed)."""
from __future__ import annotations

from typing import Sequence

from transplant.spec.schema import INPUT, ModuleSpec, Node, SpecError

Shape = tuple[int, ...]


def _conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _deconv_out(size: int, kernel: int, stride: int, padding: int, out_pad: int, dilation: int) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + out_pad + 1


def _spatial(node: Node, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise SpecError(f"node '{node.name}' ({node.op}): needs a [C, H, W] input, got {list(shape)}")
    return shape


def _node_shape(node: Node, ins: list[Shape]) -> Shape:
    a, op = node.attrs, node.op
    x = ins[0]
    if op in ("conv2d", "conv_transpose2d"):
        c, h, w = _spatial(node, x)
        if c != a["in_channels"]:
            raise SpecError(f"node '{node.name}': expects {a['in_channels']} input channels, got {c}")
        if op == "conv2d":
            conv_args = (a["kernel_size"], a["stride"], a["padding"], a["dilation"])
            out = (_conv_out(h, *conv_args), _conv_out(w, *conv_args))
        else:
            deconv_args = (a["kernel_size"], a["stride"], a["padding"], a["output_padding"], a["dilation"])
            out = (_deconv_out(h, *deconv_args), _deconv_out(w, *deconv_args))
        return _positive(node, (a["out_channels"], *out))
    if op in ("maxpool2d", "avgpool2d"):
        c, h, w = _spatial(node, x)
        args = (a["kernel_size"], a["stride"], a["padding"], 1)
        return _positive(node, (c, _conv_out(h, *args), _conv_out(w, *args)))
    if op == "linear":
        if len(x) != 1 or x[0] != a["in_features"]:
            raise SpecError(f"node '{node.name}': expects a flat input of {a['in_features']} features, "
                            f"got {list(x)}")
        return (a["out_features"],)
    if op == "flatten":
        size = 1
        for s in x:
            size *= s
        return (size,)
    if op == "batchnorm2d":
        if _spatial(node, x)[0] != a["num_features"]:
            raise SpecError(f"node '{node.name}': expects {a['num_features']} channels, got {x[0]}")
        return x
    if op == "add":
        if any(s != x for s in ins[1:]):
            raise SpecError(f"node '{node.name}': add needs equal shapes, got {[list(s) for s in ins]}")
        return x
    if op == "crop":
        c, h, w = _spatial(node, x)
        rh, rw = _spatial(node, ins[1])[1:] if len(ins) == 2 else (a["size"], a["size"])
        off = a["offset"]
        if off + rh > h or off + rw > w:
            raise SpecError(f"node '{node.name}': cannot crop {list(x)} at offset {off} to {rh}x{rw}")
        return (c, rh, rw)
    return x  # relu, dropout: shape preserving


def _positive(node: Node, shape: Shape) -> Shape:
    if any(s <= 0 for s in shape):
        raise SpecError(f"node '{node.name}': output shape {list(shape)} is empty (input too small)")
    return shape


def infer_shapes(spec: ModuleSpec, input_shape: Sequence[int] | None = None) -> dict[str, Shape]:
    """Output shape (without batch) of every node, plus INPUT; raises SpecError on a mismatch."""
    shapes: dict[str, Shape] = {INPUT: tuple(input_shape or spec.input_shape)}
    for node in spec.nodes:
        shapes[node.name] = _node_shape(node, [shapes[s] for s in node.inputs])
    return shapes


def output_shape(spec: ModuleSpec, input_shape: Sequence[int] | None = None) -> Shape:
    return infer_shapes(spec, input_shape)[spec.output]


def parameter_shapes(spec: ModuleSpec) -> dict[str, Shape]:
    """Every tensor the weights file must hold, as `<node>.<param>` -> shape."""
    out: dict[str, Shape] = {}
    for node in spec.nodes:
        a = node.attrs
        if node.op == "conv2d":
            k = a["kernel_size"]
            out[f"{node.name}.weight"] = (a["out_channels"], a["in_channels"], k, k)
        elif node.op == "conv_transpose2d":
            k = a["kernel_size"]
            out[f"{node.name}.weight"] = (a["in_channels"], a["out_channels"], k, k)
        elif node.op == "linear":
            out[f"{node.name}.weight"] = (a["out_features"], a["in_features"])
        elif node.op == "batchnorm2d":
            for p in ("weight", "bias", "running_mean", "running_var"):
                out[f"{node.name}.{p}"] = (a["num_features"],)
        if node.op in ("conv2d", "conv_transpose2d") and a["bias"]:
            out[f"{node.name}.bias"] = (a["out_channels"],)
        if node.op == "linear" and a["bias"]:
            out[f"{node.name}.bias"] = (a["out_features"],)
    return out


def parameter_count(spec: ModuleSpec) -> int:
    total = 0
    for shape in parameter_shapes(spec).values():
        size = 1
        for s in shape:
            size *= s
        total += size
    return total
