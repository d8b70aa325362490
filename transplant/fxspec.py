"""A PyTorch model as a module spec: `torch.fx` traces it, and every traced node must map onto the
closed op set of `transplant.spec` (conv2d, conv_transpose2d, relu, max/avg pool, linear, flatten,
dropout, batchnorm2d, add, crop); anything else is refused with the node's name and type.

The spec is checked against the model itself: both run on one random input and must agree.
`Crop` is the one layer of this library a model may use for FCN-style cropping (a leaf in the trace).
"""
from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from transplant.spec import INPUT, LAYER_TYPES, ModuleSpec, SpecError, build_module, parse_spec
from transplant.spec.schema import NODE_NAME, SPEC_FORMAT

AGREE_TOLERANCE = 1e-4  # relative to the largest output magnitude


def one_line(exc: BaseException, limit: int = 300) -> str:
    """torch's multi-line messages as one line, for an operator's one-line error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


class TraceError(SpecError):
    """A model cannot become a spec: a node outside the closed op set, or a form the op does not cover."""


class Crop(nn.Module):
    """`x[:, :, offset:offset+h, offset:offset+w]`, (h, w) from `reference` (or `size`): the spec's crop."""

    def __init__(self, offset: int = 0, size: int | None = None):
        super().__init__()
        self.offset, self.size = offset, size

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        if reference is not None:
            h, w = int(reference.shape[-2]), int(reference.shape[-1])
        else:
            h = w = int(self.size or 0)
        return x[:, :, self.offset:self.offset + h, self.offset:self.offset + w]


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Crop) or super().is_leaf_module(m, qualname)


def _square(value: Any, what: str, node: str) -> int:
    """An int from an int or an (a, a) pair; the spec's ops are square."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return int(value[0])
    raise TraceError(f"node '{node}': {what}={value!r} is not square (the spec's ops take one size)")


def _conv_attrs(m: nn.Conv2d | nn.ConvTranspose2d, node: str) -> dict[str, Any]:
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise TraceError(f"node '{node}' ({type(m).__name__}): groups, padding modes and 'same' padding are "
                         "outside the closed op set")
    attrs = {"in_channels": m.in_channels, "out_channels": m.out_channels,
             "kernel_size": _square(m.kernel_size, "kernel_size", node), "stride": _square(m.stride, "stride", node),
             "padding": _square(m.padding, "padding", node), "dilation": _square(m.dilation, "dilation", node),
             "bias": m.bias is not None}
    if isinstance(m, nn.ConvTranspose2d):
        attrs["output_padding"] = _square(m.output_padding, "output_padding", node)
    return attrs


def _pool_attrs(m: nn.MaxPool2d | nn.AvgPool2d, node: str) -> dict[str, Any]:
    if m.ceil_mode or (isinstance(m, nn.MaxPool2d) and (m.return_indices or _square(m.dilation, "dilation", node) != 1)) \
            or (isinstance(m, nn.AvgPool2d) and (not m.count_include_pad or m.divisor_override is not None)):
        raise TraceError(f"node '{node}' ({type(m).__name__}): ceil_mode, dilation, indices and divisor options "
                         "are outside the closed op set")
    kernel = _square(m.kernel_size, "kernel_size", node)
    return {"kernel_size": kernel, "stride": _square(m.stride or kernel, "stride", node),
            "padding": _square(m.padding, "padding", node)}


def _module_op(m: nn.Module, node: str) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]] | None:
    """(op, attrs, weights by param name) of a leaf module; None: an identity."""
    params = {k: v.detach() for k, v in m.state_dict().items() if k != "num_batches_tracked"}
    if isinstance(m, nn.Conv2d):
        return "conv2d", _conv_attrs(m, node), params
    if isinstance(m, nn.ConvTranspose2d):
        return "conv_transpose2d", _conv_attrs(m, node), params
    if isinstance(m, nn.Linear):
        return "linear", {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}, params
    if isinstance(m, nn.BatchNorm2d):
        if not (m.affine and m.track_running_stats):
            raise TraceError(f"node '{node}' (BatchNorm2d): needs affine=True and running statistics")
        return "batchnorm2d", {"num_features": m.num_features, "eps": float(m.eps)}, params
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return ("maxpool2d" if isinstance(m, nn.MaxPool2d) else "avgpool2d"), _pool_attrs(m, node), {}
    if isinstance(m, nn.ReLU):
        return "relu", {}, {}
    if isinstance(m, nn.Dropout):
        return "dropout", {"p": float(m.p)}, {}
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise TraceError(f"node '{node}' (Flatten): only start_dim=1, end_dim=-1 is in the closed op set")
        return "flatten", {}, {}
    if isinstance(m, Crop):
        return "crop", {"offset": m.offset, "size": m.size}, {}
    if isinstance(m, nn.Identity):
        return None
    raise TraceError(f"node '{node}' is a {type(m).__name__} module, outside the closed op set "
                     f"({', '.join(LAYER_TYPES)})")


_RELU: tuple[Callable[..., Any], ...] = (F.relu, torch.relu)
_ADD: tuple[Callable[..., Any], ...] = (operator.add, torch.add)


def _function_op(n: fx.Node) -> tuple[str, dict[str, Any]]:
    target, name = n.target, n.name
    kwargs = dict(n.kwargs)
    if n.op == "call_method":
        if target == "relu":
            return "relu", {}
        if target == "flatten" and _flat_args(n):
            return "flatten", {}
        if target == "add" and not kwargs:
            return "add", {}
    elif target in _RELU:
        return "relu", {}
    elif target in _ADD and "alpha" not in kwargs:
        return "add", {}
    elif target is torch.flatten and _flat_args(n):
        return "flatten", {}
    elif target is F.dropout:
        p = kwargs.get("p", n.args[1] if len(n.args) > 1 else 0.5)
        if not isinstance(p, (int, float)):
            raise TraceError(f"node '{name}': dropout with a computed p is outside the closed op set")
        return "dropout", {"p": float(p)}
    raise TraceError(f"node '{name}' calls {getattr(target, '__name__', target)!r} ({n.op}), outside the closed "
                     f"op set ({', '.join(LAYER_TYPES)})")


def _flat_args(n: fx.Node) -> bool:
    start = n.kwargs.get("start_dim", n.args[1] if len(n.args) > 1 else 0)
    end = n.kwargs.get("end_dim", n.args[2] if len(n.args) > 2 else -1)
    return bool(start == 1 and end == -1)


def _spec_name(raw: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", raw)
    if not name or not name[0].isalpha():
        name = f"n_{name}"
    name = name[:60]
    while name == INPUT or name in taken or not NODE_NAME.match(name):
        name = f"{name[:56]}_{len(taken)}"
    return name


class _Converter:
    """Walks a traced graph once, writing spec nodes and `<node>.<param>` weights."""

    def __init__(self, model: nn.Module, graph: fx.Graph, rename: Mapping[str, str]):
        self.model, self.graph, self.rename = model, graph, rename
        self.nodes: list[dict[str, Any]] = []
        self.weights: dict[str, torch.Tensor] = {}
        self.alias: dict[str, str] = {}  # fx node -> spec node (identities collapse)
        # adaptive pools waiting for their flatten and linear: fx node -> (source, pooling matrix, channels, flatten)
        self.pooled: dict[str, tuple[str, torch.Tensor, int, str]] = {}
        self.taken: set[str] = set()

    def source(self, arg: Any, node: str) -> str:
        if not isinstance(arg, fx.Node):
            raise TraceError(f"node '{node}': takes a constant {arg!r} where a tensor is expected")
        if arg.name in self.pooled:
            raise TraceError(f"node '{node}' reads the adaptive pool '{arg.name}', which only a flatten and a "
                             "linear layer may follow (its pooling is folded into the linear weights)")
        return self.alias[arg.name]

    def emit(self, fx_name: str, op: str, inputs: list[str], attrs: dict[str, Any],
             params: Mapping[str, torch.Tensor] | None = None) -> str:
        name = _spec_name(self.rename.get(fx_name, fx_name), self.taken)
        self.taken.add(name)
        self.nodes.append({"name": name, "op": op, "inputs": inputs, "attrs": attrs})
        for key, value in (params or {}).items():
            self.weights[f"{name}.{key}"] = value.detach().to(torch.float32).contiguous().clone()
        self.alias[fx_name] = name
        return name

    def run(self) -> str:
        output = None
        for n in self.graph.nodes:
            if n.op == "placeholder":
                if self.alias:
                    raise TraceError(f"the model takes more than one input ('{n.name}'); a module has one")
                self.alias[n.name] = INPUT
            elif n.op == "output":
                output = self.source(n.args[0], "output")
            elif n.op == "call_module":
                self.module_node(n)
            elif n.op in ("call_function", "call_method"):
                self.function_node(n)
            else:
                raise TraceError(f"node '{n.name}' ({n.op} {n.target}) is outside the closed op set")
        if output is None or output == INPUT:
            raise TraceError("the model's output is its input: nothing to import")
        return output

    def _pending(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.pooled

    def module_node(self, n: fx.Node) -> None:
        m = self.model.get_submodule(str(n.target))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.adaptive_pool(n, m)
        if self._pending(n.args[0]):
            return self.after_pool(n, m)
        op = _module_op(m, n.name)
        args = [a for a in n.args if a is not None]
        if op is None:
            self.alias[n.name] = self.source(args[0], n.name)
            return
        self.emit(n.name, op[0], [self.source(a, n.name) for a in args], op[1], op[2])

    def function_node(self, n: fx.Node) -> None:
        op, attrs = _function_op(n)
        if op == "flatten" and self._pending(n.args[0]):
            return self.after_pool(n, None)
        tensors = n.args[:2] if op == "add" else n.args[:1]
        self.emit(n.name, op, [self.source(a, n.name) for a in tensors], attrs)

    def adaptive_pool(self, n: fx.Node, m: nn.AdaptiveAvgPool2d) -> None:
        """Identity when it changes nothing, an avgpool where it is one, else folded into the next linear."""
        c, h, w = _shape(n.args[0])[1:]
        oh, ow = _shape(n)[2:]
        src = self.source(n.args[0], n.name)
        if (oh, ow) == (h, w):
            self.alias[n.name] = src
        elif h % oh == 0 and w % ow == 0 and h // oh == w // ow:
            self.emit(n.name, "avgpool2d", [src], {"kernel_size": h // oh, "stride": h // oh, "padding": 0})
        else:
            # adaptive average pooling is linear: P maps the flattened [h*w] map to the flattened [oh*ow] one
            basis = torch.eye(h * w).reshape(h * w, 1, h, w)
            pool = F.adaptive_avg_pool2d(basis, m.output_size).reshape(h * w, oh * ow).T  # [oh*ow, h*w]
            self.pooled[n.name] = (src, pool, c, "")

    def after_pool(self, n: fx.Node, m: nn.Module | None) -> None:
        """flatten, then linear, after an adaptive pool: the pooling folds into the linear's weights (exact)."""
        arg = n.args[0]
        assert isinstance(arg, fx.Node)
        src, pool, channels, flat = self.pooled[arg.name]
        if m is None or (isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1):
            if flat:
                raise TraceError(f"node '{n.name}': a second flatten after the adaptive pool '{arg.name}'")
            self.pooled[n.name] = (src, pool, channels, n.name)
            return
        if not isinstance(m, nn.Linear) or not flat:
            raise TraceError(f"node '{n.name}' ({type(m).__name__}) follows the adaptive pool '{arg.name}', which "
                             "only a flatten and a linear layer may follow (its pooling is folded into the linear)")
        weight = m.weight.detach().reshape(m.out_features, channels, pool.shape[0])
        folded = torch.einsum("ocq,qp->ocp", weight, pool).reshape(m.out_features, -1)
        flat_name = self.emit(flat, "flatten", [src], {})
        params = {"weight": folded, **({"bias": m.bias.detach()} if m.bias is not None else {})}
        self.emit(n.name, "linear", [flat_name], {"in_features": folded.shape[1], "out_features": m.out_features,
                                                  "bias": m.bias is not None}, params)


def _shape(node: Any) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    if meta is None or not hasattr(meta, "shape"):
        raise TraceError(f"node '{getattr(node, 'name', node)}': no tensor shape recorded in the trace")
    return tuple(meta.shape)


def spec_from_model(model: nn.Module, input_shape: tuple[int, int, int], name: str,
                    rename: Mapping[str, str] | None = None, metadata: dict[str, Any] | None = None,
                    max_params: int | None = None) -> tuple[ModuleSpec, dict[str, torch.Tensor]]:
    """Trace `model` (eval mode) for inputs [N, *input_shape] into (spec, weights); `rename` maps fx node names
    to spec node names. Raises TraceError for an op outside the closed set, SpecError for an invalid graph."""
    model = model.eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many kinds for untraceable Python (data-dependent control flow, ...)
        raise TraceError(f"torch.fx cannot trace the model: {type(exc).__name__}: {one_line(exc)}") from None
    traced = fx.GraphModule(model, graph)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))  # first plainly: ShapeProp wraps errors in a traceback's text
            ShapeProp(traced).propagate(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError) as exc:  # layers that do not fit together, or an input too small
        raise TraceError(f"the model does not run on a {list(input_shape)} input: {one_line(exc)}") from None
    converter = _Converter(model, graph, rename or {})
    output = converter.run()
    doc = {"format": SPEC_FORMAT, "name": name, "input_shape": list(input_shape), "nodes": converter.nodes,
           "output": output, "metadata": dict(metadata or {})}
    spec = parse_spec(doc, **({"max_params": max_params} if max_params else {}))
    check_agrees(model, spec, converter.weights)
    return spec, converter.weights


@torch.no_grad()
def check_agrees(model: nn.Module, spec: ModuleSpec, weights: Mapping[str, torch.Tensor], seed: int = 0) -> float:
    """Run the model and the spec on one random input; TraceError unless they agree. Returns the max difference."""
    x = torch.rand(1, *spec.input_shape, generator=torch.Generator().manual_seed(seed))
    expected, got = model.eval()(x), build_module(spec, weights)(x)
    if expected.shape != got.shape:
        raise TraceError(f"the spec's output is {list(got.shape)} but the model's is {list(expected.shape)}")
    diff = float((expected - got).abs().max())
    if diff > AGREE_TOLERANCE * max(1.0, float(expected.abs().max())):
        raise TraceError(f"the spec does not compute what the model does (max difference {diff:.3g})")
    return diff


__all__ = ["AGREE_TOLERANCE", "Crop", "TraceError", "check_agrees", "one_line", "spec_from_model"]
