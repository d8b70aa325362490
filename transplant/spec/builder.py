"""A small fluent helper to write specs in Python; the result is validated like any JSON spec."""
from __future__ import annotations

from typing import Any, Sequence

from transplant.spec.schema import DEFAULT_MAX_PARAMS, INPUT, SPEC_FORMAT, ModuleSpec, SpecError, parse_spec
from transplant.spec.shapes import infer_shapes


class SpecBuilder:
    def __init__(self, name: str, input_shape: Sequence[int], metadata: dict[str, Any] | None = None):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.nodes: list[dict[str, Any]] = []
        self.metadata = dict(metadata or {})
        self.last = INPUT

    def add(self, name: str, op: str, *inputs: str, **attrs: Any) -> str:
        """Append a node; without inputs it consumes the previously added node."""
        self.nodes.append({"name": name, "op": op, "inputs": list(inputs or (self.last,)), "attrs": attrs})
        self.last = name
        return name

    def shape(self, node: str) -> tuple[int, ...]:
        """Shape of a node added so far (handy for sizing the next layer)."""
        partial = parse_spec(self._doc(node), max_params=DEFAULT_MAX_PARAMS * 10)
        return infer_shapes(partial)[node]

    def conv_relu(self, name: str, out_channels: int, kernel_size: int = 3, padding: int = 1) -> str:
        in_channels = self.shape(self.last)[0] if self.nodes else self.input_shape[0]
        self.add(name, "conv2d", in_channels=in_channels, out_channels=out_channels,
                 kernel_size=kernel_size, padding=padding)
        return self.add(name.replace("conv", "relu", 1) if name.startswith("conv") else f"{name}_relu", "relu")

    def _doc(self, output: str) -> dict[str, Any]:
        from transplant.spec.schema import _ancestors, Node  # keep only what the output needs

        by_name = {n["name"]: Node(n["name"], n["op"], tuple(n["inputs"])) for n in self.nodes}
        keep = _ancestors(by_name, output)
        return {"format": SPEC_FORMAT, "name": self.name, "input_shape": list(self.input_shape),
                "nodes": [n for n in self.nodes if n["name"] in keep], "output": output,
                "metadata": self.metadata}

    def build(self, output: str | None = None, max_params: int = DEFAULT_MAX_PARAMS) -> ModuleSpec:
        if not self.nodes:
            raise SpecError("a spec needs at least one node")
        return parse_spec(self._doc(output or self.last), max_params=max_params)
