"""The spec language's layer types, one registration each (see base.py for what an op holds)."""
from transplant.spec.ops import conv, graph, layers, pool  # noqa: F401 (register)
from transplant.spec.ops.base import OPS, Attr, Op, ReluMasks, check_attrs, get_op, register

__all__ = ["OPS", "Attr", "Op", "ReluMasks", "check_attrs", "get_op", "register"]
