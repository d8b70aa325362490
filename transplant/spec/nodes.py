"""What every part of the spec language shares: the node record, its error and the input's name.

Kept apart from schema.py so the op registry (ops/) can use them while the schema uses the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INPUT = "input"  # the reserved name of a module's input tensor
Shape = tuple[int, ...]


class SpecError(ValueError):
    """A spec is malformed, inconsistent or too large; the message names the problem."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": dict(self.attrs)}
