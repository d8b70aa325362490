"""Declarative module specs: a DAG of named nodes from a closed set of layer types.

A spec is plain JSON, so it can cross the network and be validated before anything
is built from it. Weights travel separately as safetensors, named `<node>.<param>`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from transplant.spec.nodes import INPUT, Node, SpecError
from transplant.spec.ops import OPS, check_attrs
from transplant.tasks import TASK_TYPES, default_task_for, get_task, task_names

SPEC_FORMAT = "transplant.module.v1"
NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_NODES = 1024
MAX_SPEC_BYTES = 1 << 20
DEFAULT_MAX_PARAMS = 200_000_000  # VGG-16 has 138M
LAYER_TYPES = tuple(OPS)  # the built-in layer types (transplant.spec.ops)


@dataclass(frozen=True)
class ModuleSpec:
    """A validated module: nodes in topological order, one input, one output."""

    name: str
    input_shape: tuple[int, ...]  # (C, H, W) the module was built for
    nodes: tuple[Node, ...]
    output: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "input_shape": list(self.input_shape),
            "nodes": [n.to_json() for n in self.nodes],
            "output": self.output,
            "metadata": dict(self.metadata),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, doc: Any, max_params: int = DEFAULT_MAX_PARAMS) -> "ModuleSpec":
        return parse_spec(doc, max_params=max_params)

    @classmethod
    def loads(cls, text: str | bytes, max_params: int = DEFAULT_MAX_PARAMS) -> "ModuleSpec":
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(f"spec is {len(text)} bytes, over the limit of {MAX_SPEC_BYTES}")
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"spec is not valid JSON: {exc}") from None
        except RecursionError:  # hostile nesting: answer like any other malformed spec, never leak the Python error
            raise SpecError("spec is not valid JSON: nested too deeply") from None
        try:
            return parse_spec(doc, max_params=max_params)
        except RecursionError:
            raise SpecError("spec is nested too deeply") from None


def _parse_node(raw: Any, index: int) -> Node:
    if not isinstance(raw, dict):
        raise SpecError(f"node #{index} must be an object")
    unknown = set(raw) - {"name", "op", "inputs", "attrs"}
    if unknown:
        raise SpecError(f"node #{index}: unknown field(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NODE_NAME.match(name) or name == INPUT:
        raise SpecError(f"node #{index}: invalid name {name!r} (letters, digits, '_'; not '{INPUT}')")
    op_name = raw.get("op")
    if not isinstance(op_name, str) or op_name not in OPS:
        raise SpecError(f"node '{name}': unknown layer type {op_name!r}; known: {', '.join(OPS)}")
    op = OPS[op_name]
    inputs = raw.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise SpecError(f"node '{name}': inputs must be a list of node names")
    low, high = op.arity
    if not low <= len(inputs) <= high:
        raise SpecError(f"node '{name}' ({op_name}): takes {low}..{high} input(s), got {len(inputs)}")
    node = Node(name, op_name, tuple(inputs), check_attrs(name, op, raw.get("attrs", {})))
    if op.check is not None:
        op.check(node)
    return node


def _topological(nodes: list[Node], output: str) -> tuple[Node, ...]:
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.name in by_name:
            raise SpecError(f"duplicate node name '{node.name}'")
        by_name[node.name] = node
    for node in nodes:
        for src in node.inputs:
            if src != INPUT and src not in by_name:
                raise SpecError(f"node '{node.name}': input '{src}' is not a node")
    if output not in by_name:
        raise SpecError(f"output '{output}' is not a node")
    order = _kahn_order(nodes, by_name)
    used = _ancestors(by_name, output)
    dead = [n.name for n in nodes if n.name not in used]
    if dead:
        raise SpecError(f"node(s) {dead} do not contribute to the output '{output}'")
    return tuple(order)


def _kahn_order(nodes: list[Node], by_name: dict[str, Node]) -> list[Node]:
    """Topological order (stable in the listed order); names the nodes on a cycle."""
    pending = {n.name: len([s for s in n.inputs if s != INPUT]) for n in nodes}
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for src in node.inputs:
            consumers.setdefault(src, []).append(node.name)
    ready = [n.name for n in nodes if pending[n.name] == 0]
    order: list[Node] = []
    while ready:
        name = ready.pop(0)
        order.append(by_name[name])
        for user in consumers.get(name, []):
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    if len(order) < len(nodes):
        stuck = sorted(name for name, count in pending.items() if count > 0)
        raise SpecError(f"cycle in the graph through node(s) {stuck}")
    return order


def _ancestors(by_name: dict[str, Node], output: str) -> set[str]:
    seen, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in seen or name == INPUT:
            continue
        seen.add(name)
        stack.extend(by_name[name].inputs)
    return seen


def parse_spec(doc: Any, max_params: int = DEFAULT_MAX_PARAMS) -> ModuleSpec:
    """Validate a JSON document into a ModuleSpec (structure, graph, shapes, size)."""
    if not isinstance(doc, dict):
        raise SpecError("spec must be a JSON object")
    if doc.get("format") != SPEC_FORMAT:
        raise SpecError(f"spec format must be '{SPEC_FORMAT}', got {doc.get('format')!r}")
    unknown = set(doc) - {"format", "name", "input_shape", "nodes", "output", "metadata"}
    if unknown:
        raise SpecError(f"unknown top-level field(s) {sorted(unknown)}")
    name = doc.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise SpecError("spec 'name' must be a non-empty string of at most 200 characters")
    shape = doc.get("input_shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 8192 for s in shape)):
        raise SpecError(f"input_shape must be [C, H, W] of positive integers, got {shape!r}")
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise SpecError("spec must have a non-empty list of nodes")
    if len(raw_nodes) > MAX_NODES:
        raise SpecError(f"spec has {len(raw_nodes)} nodes, over the limit of {MAX_NODES}")
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise SpecError("metadata must be an object")
    output = doc.get("output")
    if not isinstance(output, str):
        raise SpecError("spec 'output' must name a node")
    nodes = _topological([_parse_node(raw, i) for i, raw in enumerate(raw_nodes)], output)
    spec = ModuleSpec(name, tuple(shape), nodes, output, dict(metadata))
    from transplant.spec.shapes import infer_shapes, parameter_count  # shapes needs the schema

    shapes = infer_shapes(spec)
    _check_metadata(spec.metadata, spec.input_shape, tuple(shapes[spec.output]))
    count = parameter_count(spec)
    if count > max_params:
        raise SpecError(f"spec has {count} parameters, over the limit of {max_params}")
    return spec


# ---- what a module's metadata says about its input and output (optional; defaults for old specs) ----
PREPROCESS, OUTPUT = "preprocess", "output"  # metadata keys
RESIZE_MODES = ("bilinear",)
_PREPROCESS_KEYS = {"channels", "size", "resize", "divide", "mean", "std"}


def default_preprocess(input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a spec without `metadata.preprocess` is fed: how transplant.data.folders reads images
    (RGB, or greyscale for 1-channel modules; bilinear resize to the input size; /255; no normalisation)."""
    channels, height, width = input_shape
    return {"channels": channels, "size": [height, width], "resize": "bilinear", "divide": 255.0,
            "mean": [0.0] * channels, "std": [1.0] * channels}


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == value \
        and abs(value) != float("inf")


def check_preprocess(doc: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """`metadata.preprocess` validated against the module's input shape, defaults filled in."""
    if not isinstance(doc, dict):
        raise SpecError("metadata.preprocess must be an object")
    unknown = set(doc) - _PREPROCESS_KEYS
    if unknown:
        raise SpecError(f"metadata.preprocess: unknown field(s) {sorted(unknown)}; known: {sorted(_PREPROCESS_KEYS)}")
    out = {**default_preprocess(input_shape), **doc}
    if out["channels"] not in (1, 3):
        raise SpecError(f"metadata.preprocess.channels must be 1 (greyscale) or 3 (RGB), got {out['channels']!r}")
    if out["channels"] != input_shape[0]:
        raise SpecError(f"metadata.preprocess.channels={out['channels']} but the module reads "
                        f"{input_shape[0]} channel(s)")
    if list(out["size"]) != list(input_shape[1:]):
        raise SpecError(f"metadata.preprocess.size={out['size']!r} but the module reads "
                        f"[H, W] = {list(input_shape[1:])}")
    if out["resize"] not in RESIZE_MODES:
        raise SpecError(f"metadata.preprocess.resize must be one of {list(RESIZE_MODES)}, got {out['resize']!r}")
    if not _number(out["divide"]) or out["divide"] <= 0:
        raise SpecError(f"metadata.preprocess.divide must be a positive number, got {out['divide']!r}")
    for key in ("mean", "std"):
        values = out[key]
        if not isinstance(values, list) or len(values) != out["channels"] or not all(map(_number, values)):
            raise SpecError(f"metadata.preprocess.{key} must be {out['channels']} number(s), got {values!r}")
    if min(out["std"]) <= 0:
        raise SpecError(f"metadata.preprocess.std must be positive, got {out['std']!r}")
    return out


def default_output(output_shape: tuple[int, ...], category: str = "category", kind: str | None = None
                   ) -> dict[str, Any]:
    """What a task spec without `metadata.output` means, read off its output shape (the task types'
    defaults: [1] one logit (> 0: is the category), [K, H, W] per-pixel class scores, argmax)."""
    task = get_task(kind) if kind is not None else default_task_for(tuple(output_shape))
    return task.output.default(tuple(output_shape), category)


def check_output(doc: Any, output_shape: tuple[int, ...]) -> dict[str, Any]:
    """`metadata.output` validated against the module's output shape, defaults filled in."""
    if not isinstance(doc, dict):
        raise SpecError("metadata.output must be an object")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in TASK_TYPES:
        raise SpecError(f"metadata.output.kind must be {' or '.join(map(repr, task_names()))}, got {kind!r}")
    meaning = TASK_TYPES[kind].output
    out = {**meaning.default(tuple(output_shape), "category"), **doc}
    allowed = {"kind", "classes"} | meaning.fields
    if set(out) - allowed:
        raise SpecError(f"metadata.output ({kind}): unknown field(s) {sorted(set(out) - allowed)}")
    classes = out["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in classes):
        raise SpecError(f"metadata.output.classes must be a list of non-empty names, got {classes!r}")
    problem = meaning.problem(out, tuple(output_shape))
    if problem:
        raise SpecError(problem)
    return out


def _check_metadata(metadata: dict[str, Any], input_shape: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
    # validated, not rewritten: the spec's JSON (and so its module id) stays exactly as sent
    if PREPROCESS in metadata:
        check_preprocess(metadata[PREPROCESS], input_shape)
    if OUTPUT in metadata:
        check_output(metadata[OUTPUT], output_shape)


def preprocess_of(spec: ModuleSpec) -> dict[str, Any]:
    """How to feed a category module: its recorded preprocessing, else the documented default."""
    return check_preprocess(spec.metadata.get(PREPROCESS, {}), spec.input_shape)


def output_of(spec: ModuleSpec, category: str = "category") -> dict[str, Any]:
    """What a task module's output means: its recorded meaning, else the default for its output shape."""
    from transplant.spec.shapes import output_shape

    shape = output_shape(spec)
    return check_output(spec.metadata.get(OUTPUT) or default_output(shape, category), shape)
