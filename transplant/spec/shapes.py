"""Shape inference and parameter counting for module specs: each op's shape and parameter rules
(transplant.spec.ops), applied node by node."""
from __future__ import annotations

import math
from typing import Sequence

from transplant.spec.nodes import INPUT, Shape
from transplant.spec.ops import get_op
from transplant.spec.schema import ModuleSpec

__all__ = ["Shape", "infer_shapes", "output_shape", "parameter_count", "parameter_shapes"]


def infer_shapes(spec: ModuleSpec, input_shape: Sequence[int] | None = None) -> dict[str, Shape]:
    """Output shape (without batch) of every node, plus INPUT; raises SpecError on a mismatch."""
    shapes: dict[str, Shape] = {INPUT: tuple(input_shape or spec.input_shape)}
    for node in spec.nodes:
        shapes[node.name] = get_op(node.op).shape(node, [shapes[s] for s in node.inputs])
    return shapes


def output_shape(spec: ModuleSpec, input_shape: Sequence[int] | None = None) -> Shape:
    return infer_shapes(spec, input_shape)[spec.output]


def parameter_shapes(spec: ModuleSpec) -> dict[str, Shape]:
    """Every tensor the weights file must hold, as `<node>.<param>` -> shape."""
    return {f"{node.name}.{param}": shape for node in spec.nodes
            for param, shape in get_op(node.op).params(node.attrs).items()}


def parameter_count(spec: ModuleSpec) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(spec).values())
