"""Build runnable torch modules from specs; weights in and out as safetensors (never pickle)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from transplant.spec.ops import get_op
from transplant.spec.schema import INPUT, ModuleSpec, Node
from transplant.spec.shapes import parameter_shapes
from transplant.spec.tensorcheck import WeightsError, check_bytes, check_tensors, expect_float32


class SpecModule(nn.Module):
    """A torch module that executes a ModuleSpec node by node.

    Parameters are named exactly `<node>.<param>`, the names in the safetensors file.
    """

    def __init__(self, spec: ModuleSpec):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        for node in spec.nodes:
            make = get_op(node.op).layer  # the torch layer owning the node's parameters, if any
            if make is not None:
                self.layers[node.name] = make(node.attrs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.spec.output]

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's output (useful for features, e.g. the last layer for PCA plots)."""
        values: dict[str, torch.Tensor] = {INPUT: x}
        for node in self.spec.nodes:
            values[node.name] = self.apply_node(node, [values[s] for s in node.inputs])
        return values

    def apply_node(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        """One node's output: its op's forward, with its layer where it has one."""
        layer = self.layers[node.name] if node.name in self.layers else None
        return get_op(node.op).forward(node, layer, ins)

    def weights(self) -> dict[str, torch.Tensor]:
        """`<node>.<param>` -> tensor, the names the spec promises (no batchnorm counters)."""
        expected = parameter_shapes(self.spec)
        state = {k.removeprefix("layers."): v for k, v in self.state_dict().items()}
        return {k: state[k].detach().contiguous() for k in expected}


def check_weights(spec: ModuleSpec, tensors: Mapping[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes exactly as the spec says; every value finite (transplant.spec.tensorcheck)."""
    check_tensors(parameter_shapes(spec), tensors)


def build_module(spec: ModuleSpec, weights: Mapping[str, torch.Tensor] | None = None) -> SpecModule:
    """A runnable module in eval mode; with weights, they are checked then loaded."""
    module = SpecModule(spec)
    if weights is not None:
        check_weights(spec, weights)
        state = module.state_dict()
        for name, tensor in weights.items():
            state[f"layers.{name}"] = tensor
        module.load_state_dict(state)
    return module.eval()


def weights_to_bytes(module: SpecModule) -> bytes:
    return st_save(module.weights(), metadata={"spec": module.spec.name})


def weights_from_bytes(data: bytes | bytearray, spec: ModuleSpec | None = None) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (a format that cannot execute code); with a spec, the bytes are checked
    against it first (header, then every value in one numpy pass), before any tensor is allocated."""
    if spec is not None:
        return checked_tensors(data, parameter_shapes(spec))
    return _safetensors(data)


def checked_tensors(data: bytes | bytearray, expected: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """The float32 tensors of a safetensors file, checked against `expected` (names, shapes, finite values).
    A bytearray (what a checked download returns) is read in place: the tensors are views of it, no copy."""
    header = check_bytes(data, expect_float32({k: tuple(v) for k, v in expected.items()}))
    if not isinstance(data, bytearray) or sys.byteorder != "little":
        return _safetensors(data)
    tensors = {}
    for t in header.tensors.values():
        offset, count = header.data_start + t.begin, (t.end - t.begin) // 4
        view = torch.frombuffer(data, dtype=torch.float32, count=count, offset=offset) if count else torch.empty(0)
        tensors[t.name] = (view if offset % 4 == 0 else view.clone()).reshape(t.shape)  # aligned, or copied
    return tensors


def _safetensors(data: bytes | bytearray) -> dict[str, torch.Tensor]:
    try:
        return st_load(bytes(data))  # no copy for bytes
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise WeightsError(f"weights are not a valid safetensors file: {exc}") from None


def save_module(module: SpecModule, directory: Path | str) -> Path:
    """`<dir>/module.json` + `<dir>/module.safetensors`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "module.json").write_text(module.spec.dumps())
    (directory / "module.safetensors").write_bytes(weights_to_bytes(module))
    return directory


def load_module(directory: Path | str) -> SpecModule:
    directory = Path(directory)
    spec = ModuleSpec.loads((directory / "module.json").read_text())
    return build_module(spec, weights_from_bytes((directory / "module.safetensors").read_bytes(), spec))
