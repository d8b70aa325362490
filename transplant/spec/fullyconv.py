"""Run a classifier fully convolutionally: fc layers become convs, so an enlarged input gives an
S x S output map, which is what the "enlarged G" of the paper's Exp.2 back-propagates from."""
from __future__ import annotations


import torch

from transplant.spec.build import SpecModule, build_module
from transplant.spec.ops import get_op
from transplant.spec.schema import ModuleSpec, Node, SpecError
from transplant.spec.shapes import infer_shapes


def fully_convolutional(spec: ModuleSpec) -> ModuleSpec:
    """flatten + linear -> conv (kernel = the flattened map's size); later linears -> 1x1 convs."""
    shapes = infer_shapes(spec)
    nodes: list[Node] = []
    renamed: dict[str, str] = {}
    after_flatten = False
    for node in spec.nodes:
        inputs = tuple(renamed.get(s, s) for s in node.inputs)
        if node.op == "flatten":
            in_shape = shapes[node.inputs[0]]
            if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
                raise SpecError(f"node '{node.name}': can only convolutionalise a square [C, H, W] map")
            renamed[node.name] = inputs[0]
            after_flatten, kernel = True, in_shape[1]
            continue
        if node.op == "linear":
            if not after_flatten:
                raise SpecError(f"node '{node.name}': a linear layer must follow a flatten to be convolutionalised")
            a = node.attrs
            channels = a["in_features"] // (kernel * kernel)
            node = Node(node.name, "conv2d", inputs, {
                "in_channels": channels, "out_channels": a["out_features"], "kernel_size": kernel,
                "stride": 1, "padding": 0, "dilation": 1, "bias": a["bias"]})
            kernel = 1
        elif after_flatten and not get_op(node.op).pointwise:  # elementwise ops run on maps alike
            raise SpecError(f"node '{node.name}' ({node.op}) after flatten cannot be convolutionalised")
        else:
            node = Node(node.name, node.op, inputs, node.attrs)
        nodes.append(node)
    # the view's output is a score map, not the one logit the task module's `output` metadata describes
    metadata = {k: v for k, v in spec.metadata.items() if k != "output"}
    return ModuleSpec(f"{spec.name}.fullyconv", spec.input_shape, tuple(nodes),
                      renamed.get(spec.output, spec.output), metadata)


def fully_convolutional_module(module: SpecModule) -> SpecModule:
    """The same weights, reshaped for the convolutional view (same dtype as the module)."""
    conv_spec = fully_convolutional(module.spec)
    dtype = next(module.parameters()).dtype
    weights = {k: v.float() for k, v in module.weights().items()}
    for node in conv_spec.nodes:
        key = f"{node.name}.weight"
        if module.spec.node(node.name).op == "linear":
            a = node.attrs
            weights[key] = weights[key].reshape(a["out_channels"], a["in_channels"], a["kernel_size"],
                                                a["kernel_size"]).contiguous()
    return build_module(conv_spec, weights).to(dtype)


def enlarged_input_shape(conv_spec: ModuleSpec, size: int) -> tuple[int, int, int]:
    """The smallest input [C, H, W] (H = W) whose output map is size x size."""
    c, h, _ = conv_spec.input_shape
    for extra in range(0, 64 * size + 1):
        try:
            out = infer_shapes(conv_spec, (c, h + extra, h + extra))[conv_spec.output]
        except SpecError:
            continue
        if len(out) == 3 and out[1] >= size:
            if out[1] == size:
                return (c, h + extra, h + extra)
            break
    raise SpecError(f"no input size gives a {size}x{size} output for '{conv_spec.name}'")


def check_same_outputs(module: SpecModule, conv_module: SpecModule, x: torch.Tensor) -> float:
    """Max abs difference between the classifier and its convolutional view at the native size."""
    with torch.no_grad():
        return float((module(x) - conv_module(x).flatten(1)).abs().max())


__all__ = ["check_same_outputs", "enlarged_input_shape", "fully_convolutional", "fully_convolutional_module"]
