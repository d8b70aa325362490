"""Nets a site already has, as this project's modules: a whole-net spec, cut into a category module and a
task module at one node, with the output reduced to what the task type reads.

State dicts in torchvision's VGG layout (`features.N.*`, `classifier.N.*`; vgg11..19, with or without
batch norm) and FCN-8s-style segmenters on a VGG trunk (`features.N.*` plus `fc6`, `fc7`, `score_fr`,
`score_pool4`, `score_pool3`, `upscore2`, `upscore_pool4`, `upscore8`, the FCN-8s names; the head computes
what `transplant.architectures.segmentation_spec` does) are rebuilt here as torch modules, loaded strictly
(every key, every shape), then traced by `transplant.fxspec` like any other model. torchvision itself is
never needed. Node names follow the paper: conv1_1, relu1_1, pool1, ..., fc6, ...
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transplant.architectures import VGGConfig, teacher_specs
from transplant.fxspec import Crop, TraceError, one_line
from transplant.spec import INPUT, ModuleSpec, SpecError, infer_shapes, parameter_shapes, parse_spec
from transplant.spec.schema import SPEC_FORMAT

DEFAULT_SPLIT = "pool1"  # the paper's cut: the category module is the first stage
VGG_CLASSIFIER, FCN8S = "torchvision-vgg", "fcn8s-vgg"
_FEATURE = re.compile(r"^features\.(\d+)\.weight$")
_FCN_HEAD = ("fc6", "fc7", "score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local `.safetensors` file, or a torch file read with `weights_only=True` (no pickled code runs).
    A checkpoint holding the weights under 'state_dict' or 'model' is unwrapped; 'module.' prefixes
    (DataParallel) are dropped."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses pickled objects with an UnpicklingError (many lines)
            raise SpecError(f"{path} is not a plain state dict: torch.load(weights_only=True) refuses it "
                            f"({type(exc).__name__}: {one_line(exc, 200)})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"{path} does not hold a state dict (names -> tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    if not any(_FEATURE.match(k) for k in state):
        raise SpecError("the state dict has no 'features.N.weight' keys: not a VGG-layout net "
                        "(use --model for any other torch model)")
    return FCN8S if "score_fr.weight" in state else VGG_CLASSIFIER


class _Stage:
    """One VGG stage as torchvision lays it out: convs (each with an optional batch norm) then a 2x2 max pool."""

    def __init__(self) -> None:
        self.convs: list[tuple[int, int, int, int]] = []  # (index, in, out, kernel)


def _vgg_features(state: Mapping[str, torch.Tensor]) -> tuple[nn.Sequential, dict[str, str], list[int]]:
    """torchvision's `features` rebuilt from the keys; (module, fx name -> paper name, pool indices)."""
    convs = sorted(int(m.group(1)) for k in state if (m := _FEATURE.match(k)) and state[k].ndim == 4)
    bn = f"features.{convs[0] + 1}.running_mean" in state
    layers: list[nn.Module] = []
    names: dict[str, str] = {}
    pools, stage, conv_in_stage = [], 1, 0
    for position, index in enumerate(convs):
        if len(layers) != index:
            raise SpecError(f"features.{index}: expected the next conv at features.{len(layers)} (torchvision's "
                            "layout: conv, [batch norm,] relu, and a 2x2 max pool after each stage)")
        out, inp, k, _ = state[f"features.{index}.weight"].shape
        conv_in_stage += 1
        layers.append(nn.Conv2d(inp, out, k, padding=k // 2))
        names[f"features_{index}"] = f"conv{stage}_{conv_in_stage}"
        if bn:
            layers.append(nn.BatchNorm2d(out))
            names[f"features_{index + 1}"] = f"bn{stage}_{conv_in_stage}"
        names[f"features_{len(layers)}"] = f"relu{stage}_{conv_in_stage}"
        layers.append(nn.ReLU(inplace=True))
        following = convs[position + 1] if position + 1 < len(convs) else None
        if following is None or following > len(layers):  # a pool closes the stage
            names[f"features_{len(layers)}"] = f"pool{stage}"
            pools.append(len(layers))
            layers.append(nn.MaxPool2d(2, 2))
            stage, conv_in_stage = stage + 1, 0
    return nn.Sequential(*layers), names, pools


class TorchvisionVGG(nn.Module):
    """torchvision's VGG (features, 7x7 adaptive average pool, classifier) with the shapes a state dict has."""

    def __init__(self, state: Mapping[str, torch.Tensor]):
        super().__init__()
        self.features, self.names, _ = _vgg_features(state)
        linears = sorted(int(k.split(".")[1]) for k in state if re.match(r"^classifier\.\d+\.weight$", k))
        if not linears or linears != list(range(0, 3 * len(linears), 3)):
            raise SpecError("expected classifier.0, classifier.3, ... (torchvision's linear, relu, dropout) "
                            f"weights; found classifier indices {linears}")
        layers: list[nn.Module] = []
        for i, index in enumerate(linears):
            out, inp = state[f"classifier.{index}.weight"].shape
            layers.append(nn.Linear(inp, out))
            self.names[f"classifier_{index}"] = f"fc{6 + i}"
            if i + 1 < len(linears):
                layers += [nn.ReLU(inplace=True), nn.Dropout()]
                self.names[f"classifier_{index + 1}"], self.names[f"classifier_{index + 2}"] = \
                    f"relu{6 + i}", f"drop{6 + i}"
        self.classifier = nn.Sequential(*layers)
        first, channels = layers[0], self._channels()
        assert isinstance(first, nn.Linear)
        side = int(round((first.in_features / channels) ** 0.5))
        if side * side * channels != first.in_features:
            raise SpecError(f"classifier.0 reads {first.in_features} features, not {channels} channels x a square "
                            "map (torchvision's adaptive pool)")
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.load_state_dict(state, strict=True)

    def _channels(self) -> int:
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _conv(state: Mapping[str, torch.Tensor], name: str) -> nn.Conv2d:
    out, inp, k, _ = state[f"{name}.weight"].shape
    return nn.Conv2d(inp, out, k, padding=k // 2)


def _upscore(state: Mapping[str, torch.Tensor], name: str, stride: int) -> nn.ConvTranspose2d:
    inp, out, k, _ = state[f"{name}.weight"].shape
    return nn.ConvTranspose2d(inp, out, k, stride=stride, bias=False)


class FCN8s(nn.Module):
    """FCN-8s on a VGG trunk: fc6/fc7 as convs on the top pool, scores fused with the two pools below it
    (2x upsampling + crop, as transplant.architectures.segmentation_spec), 8x upsampling, crop to the input."""

    def __init__(self, state: Mapping[str, torch.Tensor], side: int):
        super().__init__()
        missing = [k for k in _FCN_HEAD if f"{k}.weight" not in state]
        if missing:
            raise SpecError(f"an FCN-8s state dict needs {', '.join(_FCN_HEAD)}; missing {', '.join(missing)}")
        self.features, self.names, self.pools = _vgg_features(state)
        if len(self.pools) < 3:
            raise SpecError("FCN-8s needs a trunk of at least 3 stages (skips from the two pools below the top)")
        conv = {name: _conv(state, name) for name in ("fc6", "fc7", "score_fr", "score_pool4", "score_pool3")}
        self.fc6, self.fc7, self.score_fr = conv["fc6"], conv["fc7"], conv["score_fr"]
        self.score_pool4, self.score_pool3 = conv["score_pool4"], conv["score_pool3"]
        self.relu6, self.drop6, self.relu7, self.drop7 = nn.ReLU(), nn.Dropout(), nn.ReLU(), nn.Dropout()
        self.upscore2, self.upscore_pool4 = _upscore(state, "upscore2", 2), _upscore(state, "upscore_pool4", 2)
        self.upscore8 = _upscore(state, "upscore8", 8)
        # the last crop takes the input's side: a task module never sees the input itself
        self.crop4, self.crop3, self.crop_final = Crop(1), Crop(1), Crop(int(self.upscore8.kernel_size[0]) // 4, side)
        self.names.update({"crop4": "crop_a", "crop3": "crop_b", "add": "fuse_pool4", "add_1": "fuse_pool3",
                           "upscore2": "upscore_a", "upscore_pool4": "upscore_b", "upscore8": "upscore_final",
                           "crop_final": "score"})
        self.load_state_dict(state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, maps = x, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.pools:
                maps.append(h)
        score = self.score_fr(self.drop7(self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(maps[-1])))))))
        side4 = self.score_pool4(maps[-2])
        fused = self.crop4(self.upscore2(score), side4) + side4
        side3 = self.score_pool3(maps[-3])
        fused = self.crop3(self.upscore_pool4(fused), side3) + side3
        return self.crop_final(self.upscore8(fused))


def model_from_state_dict(state: Mapping[str, torch.Tensor], input_hw: tuple[int, int]
                          ) -> tuple[nn.Module, dict[str, str], str]:
    """(model, fx name -> paper name, layout) of a VGG-layout state dict for [H, W] inputs, every key and
    shape checked. FCN-8s needs square inputs (the spec's crop takes one side)."""
    layout = detect_layout(state)
    if layout == FCN8S and input_hw[0] != input_hw[1]:
        raise SpecError(f"an FCN-8s import needs a square input, got {input_hw[0]}x{input_hw[1]}")
    try:
        model: TorchvisionVGG | FCN8s = FCN8s(state, input_hw[0]) if layout == FCN8S else TorchvisionVGG(state)
    except RuntimeError as exc:  # load_state_dict(strict=True): unexpected keys or shapes
        raise SpecError(f"the state dict does not match the {layout} layout: {one_line(exc)}") from None
    return model, model.names, layout


# ---- the VGG family of modules someone else trained: to train a net that fits them ----

def vgg_config_of(category: ModuleSpec, tasks: Mapping[str, ModuleSpec]) -> VGGConfig:
    """The VGGConfig whose teacher_specs are exactly these modules (a base's, or a site's a net wants to join);
    SpecError if they are not a VGG family this project trains (e.g. an import cut elsewhere)."""
    convs: dict[int, dict[int, int]] = {}
    fc: list[int] = []
    cfg: dict[str, Any] = {}
    for spec in (category, *tasks.values()):
        for node in spec.nodes:
            match = re.fullmatch(r"conv(\d+)_(\d+)", node.name)
            if match and node.op == "conv2d":
                convs.setdefault(int(match[1]), {})[int(match[2])] = node.attrs["out_channels"]
            elif re.fullmatch(r"fc\d+", node.name) and node.name != spec.output:
                fc.append(node.attrs.get("out_features", node.attrs.get("out_channels", 0)))
            elif node.op == "dropout":
                cfg["dropout"] = node.attrs["p"]
        if spec is not category and spec.node(spec.output).op == "linear":
            cfg["num_outputs"] = spec.node(spec.output).attrs["out_features"]
        if "score_fr" in {n.name for n in spec.nodes}:
            cfg["seg_classes"] = spec.node("score_fr").attrs["out_channels"]
    stages = sorted(convs)
    channels, height, width = category.input_shape
    if stages != list(range(1, len(stages) + 1)) or height != width:
        raise SpecError(f"{category.name} is not a VGG family this project trains (stages {stages}, "
                        f"input {height}x{width})")
    fc_units = tuple(dict.fromkeys(fc)) if len(set(fc)) > 1 else tuple(fc[: max(1, len(fc) // max(1, len(tasks)))])
    config = VGGConfig(in_channels=channels, image_size=height, fc=fc_units or (128, 128),
                       widths=tuple(convs[s][max(convs[s])] for s in stages),
                       convs=tuple(len(convs[s]) for s in stages),
                       name=str(category.metadata.get("family", category.name)), **cfg)
    built = teacher_specs(config, tuple(tasks))
    for task, spec in {"category": category, **tasks}.items():
        made = built.category if task == "category" else built.tasks[task]
        if parameter_shapes(made) != parameter_shapes(spec):
            raise SpecError(f"the {task} module {spec.name!r} is not a VGG family this project trains")
    return config


# ---- the whole net's spec cut into modules, and its output reduced to the task's ----

def split_spec(spec: ModuleSpec, weights: Mapping[str, torch.Tensor], at: str, task: str
               ) -> tuple[ModuleSpec, dict[str, torch.Tensor], ModuleSpec, dict[str, torch.Tensor]]:
    """(category spec, weights, task spec, weights): everything `at` depends on, and everything else, which
    must read nothing below the cut but `at` itself."""
    names = [n.name for n in spec.nodes]
    if at not in names or at == spec.output:
        raise SpecError(f"cannot split at {at!r}: " + ("it is the output" if at == spec.output else
                        f"no such node (nodes: {', '.join(names)})"))
    below = _ancestors(spec, at)
    upper = [n for n in spec.nodes if n.name not in below]
    for node in upper:
        crossing = [s for s in node.inputs if (s in below or s == INPUT) and s != at]
        if crossing:
            raise SpecError(f"cannot split at {at!r}: node '{node.name}' above the cut also reads "
                            f"'{crossing[0]}' below it; a task module reads only the category module's output")
    shapes = infer_shapes(spec)
    head = _doc(spec, f"{spec.name}.category", spec.input_shape, [n for n in spec.nodes if n.name in below], at,
                {"role": "category"})
    tail_nodes = [{**n.to_json(), "inputs": [INPUT if s == at else s for s in n.inputs]} for n in upper]
    tail = _doc(spec, f"{spec.name}.{task}", shapes[at], tail_nodes, spec.output, {"role": "task", "task": task})
    return head, _weights_of(head, weights), tail, _weights_of(tail, weights)


def _ancestors(spec: ModuleSpec, name: str) -> set[str]:
    by_name = {n.name: n for n in spec.nodes}
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current != INPUT and current not in seen:
            seen.add(current)
            stack.extend(by_name[current].inputs)
    return seen


def _doc(spec: ModuleSpec, name: str, input_shape: tuple[int, ...], nodes: list, output: str,
         metadata: dict[str, Any]) -> ModuleSpec:
    raw = [n if isinstance(n, dict) else n.to_json() for n in nodes]
    family = spec.metadata.get("family", spec.name)
    return parse_spec({"format": SPEC_FORMAT, "name": name, "input_shape": list(input_shape), "nodes": raw,
                       "output": output, "metadata": {**metadata, "family": family}})


def _weights_of(spec: ModuleSpec, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    own = {n.name for n in spec.nodes}
    return {k: v for k, v in weights.items() if k.split(".", 1)[0] in own}


def select_outputs(spec: ModuleSpec, weights: Mapping[str, torch.Tensor], rows: torch.Tensor
                   ) -> tuple[ModuleSpec, dict[str, torch.Tensor]]:
    """The net's output channels mixed by `rows` [k, K] (e.g. [[0, 1]] keeps logit 1; [[-1, 1]] is z1 - z0):
    folded into a final linear or conv, else one 1x1 layer appended. Exact either way."""
    out_shape = infer_shapes(spec)[spec.output]
    channels = out_shape[0]
    if rows.shape[1] != channels:
        raise SpecError(f"the net outputs {channels} channel(s); cannot select with {list(rows.shape)}")
    last = spec.node(spec.output)
    weights = dict(weights)
    nodes = [n.to_json() for n in spec.nodes]
    if last.op in ("linear", "conv2d"):
        w = weights[f"{last.name}.weight"]
        weights[f"{last.name}.weight"] = torch.einsum("kc,c...->k...", rows, w).contiguous()
        if f"{last.name}.bias" in weights:
            weights[f"{last.name}.bias"] = (rows @ weights[f"{last.name}.bias"]).contiguous()
        key = "out_features" if last.op == "linear" else "out_channels"
        nodes[[n["name"] for n in nodes].index(last.name)]["attrs"][key] = rows.shape[0]
        output = last.name
    else:
        output = "select"
        if len(out_shape) == 1:
            nodes.append({"name": output, "op": "linear", "inputs": [last.name],
                          "attrs": {"in_features": channels, "out_features": rows.shape[0], "bias": False}})
            weights[f"{output}.weight"] = rows.clone()
        else:
            nodes.append({"name": output, "op": "conv2d", "inputs": [last.name],
                          "attrs": {"in_channels": channels, "out_channels": rows.shape[0], "kernel_size": 1,
                                    "bias": False}})
            weights[f"{output}.weight"] = rows.reshape(*rows.shape, 1, 1).clone()
    doc = {**spec.to_json(), "nodes": nodes, "output": output}
    return parse_spec(doc), weights


def selection(channels: int, keep: tuple[int, ...], task_is_dense: bool) -> torch.Tensor:
    """Rows for `select_outputs`: a dense task keeps channels `keep` (background, category); a single logit is
    keep[0] alone, or keep[0] minus keep[1] (a 2-way softmax's log-odds)."""
    for k in keep:
        if not 0 <= k < channels:
            raise SpecError(f"output channel {k} does not exist: the net has {channels}")
    if task_is_dense:
        return torch.eye(channels)[list(keep)]
    row = torch.zeros(1, channels)
    row[0, keep[0]] += 1.0
    if len(keep) > 1:
        row[0, keep[1]] -= 1.0
    return row


__all__ = ["DEFAULT_SPLIT", "FCN8S", "FCN8s", "TorchvisionVGG", "TraceError", "VGG_CLASSIFIER", "detect_layout",
           "model_from_state_dict", "read_state_dict", "select_outputs", "selection", "split_spec", "vgg_config_of"]
