"""`python -m site_agent import`: a net the site already has becomes its workspace (then, optionally, pushed).

The weights come from a local file (`torch.load(weights_only=True)` or safetensors, never downloaded):
a VGG-layout state dict (torchvision's `vgg16` classifier, an FCN-8s-style segmenter on the VGG trunk)
is rebuilt by `transplant.importing`; any other model comes from `--model package.module:factory` (the
site's own code) and is traced by `torch.fx` into the closed op set. The whole net is cut at `--split`
(default pool1, as the paper), its output reduced to what the task reads (one logit; background and
category channels), and evaluated on the site's own held-out data before anything is written or pushed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transplant.fxspec import TraceError, one_line, spec_from_model
from transplant.importing import (DEFAULT_SPLIT, FCN8S, model_from_state_dict, read_state_dict, select_outputs,
                                  selection, split_spec)
from transplant.metrics import evaluate
from transplant.spec import ModuleSpec, SpecError, SpecModule, build_module, output_shape
from transplant.spec.schema import OUTPUT, PREPROCESS
from transplant.tasks import CLASSIFICATION, SEGMENTATION, get_task
from transplant.teacher import feature_norm_mean

from site_agent.data import load_source, parse_source
from site_agent.errors import SiteAgentError
from site_agent.workspace import SiteInfo, normalise, save_modules

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's pre-trained nets


@dataclass(frozen=True)
class ImportOptions:
    site_id: str
    data: str
    weights: Path
    model: str | None = None                 # "package.module:factory": the site's own model code (torch.fx)
    task: str | None = None                  # default: segmentation for FCN-8s state dicts, else classification
    split: str = DEFAULT_SPLIT
    input_size: tuple[int, int] = (224, 224)  # (H, W)
    keep: tuple[int, ...] | None = None      # output channels: logit POS[,NEG] or segmentation BG,FG
    mean: tuple[float, ...] | None = None    # default: ImageNet's for VGG-layout state dicts, else none
    std: tuple[float, ...] | None = None
    category: str | None = None
    seed: int = 0
    negatives: tuple[str, ...] | None = None
    share_samples: int = 0


def _factory_model(spec: str, state: dict[str, torch.Tensor]) -> nn.Module:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SiteAgentError(f"--model {spec!r}: expected package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
        model = factory()
    except (ImportError, AttributeError) as exc:
        raise SiteAgentError(f"--model {spec!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SiteAgentError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SiteAgentError(f"the weights do not fit --model {spec!r}: {one_line(exc)}") from None
    return model


def whole_net(opts: ImportOptions, channels: int) -> tuple[ModuleSpec, dict[str, torch.Tensor], str]:
    """(spec, weights, layout) of the entire imported net, checked against the torch model it came from."""
    state = read_state_dict(opts.weights)
    rename: dict[str, str]
    if opts.model:
        model, rename, layout = _factory_model(opts.model, state), {}, "fx"
    else:
        model, rename, layout = model_from_state_dict(state, opts.input_size)
    spec, weights = spec_from_model(model, (channels, *opts.input_size), f"{opts.site_id}.import", rename,
                                    {"family": f"{layout}-import"})
    return spec, weights, layout


def _task(opts: ImportOptions, layout: str) -> str:
    task = opts.task or (SEGMENTATION if layout == FCN8S else CLASSIFICATION)
    if task not in parse_source(opts.data).tasks:
        raise SiteAgentError(f"{opts.data!r} has no labels for {task} (its tasks: "
                             f"{', '.join(parse_source(opts.data).tasks)})")
    return task


def _keep(opts: ImportOptions, task: str, channels: int, category: str) -> tuple[int, ...] | None:
    """Which output channels become the task's output (None: already what the task reads)."""
    if opts.keep is not None:
        return opts.keep
    dense = get_task(task).dense_output
    if (dense and channels == 2) or (not dense and channels == 1):
        return None
    if not dense and channels == 2:
        return (1, 0)  # a 2-way softmax: its log-odds z1 - z0 is the one logit
    src = parse_source(opts.data)
    if dense and src.kind == "voc" and channels == 21:
        from transplant.data.folders import voc_class_index

        return (0, voc_class_index(category))
    raise SiteAgentError(f"the net has {channels} outputs; say which to keep with --keep "
                         + ("BACKGROUND,CATEGORY" if dense else "POSITIVE[,NEGATIVE] (logit, or the difference)"))


def _split_node(spec: ModuleSpec, split: str) -> str:
    """`split`; the default (pool1) on a net without that name (a --model import) is its first max pool."""
    names = [n.name for n in spec.nodes]
    if split == DEFAULT_SPLIT and split not in names:
        return next((n.name for n in spec.nodes if n.op == "maxpool2d"), split)
    return split


def _with_meaning(spec: ModuleSpec, key: str, value: dict[str, Any]) -> ModuleSpec:
    return ModuleSpec.from_json({**spec.to_json(), "metadata": {**spec.metadata, key: value}})


def import_site(opts: ImportOptions, workspace: Path | str) -> tuple[SiteInfo, dict[str, float]]:
    """Build, check and evaluate the modules, then write the workspace; returns (info, held-out metrics)."""
    height, width = opts.input_size
    dataset = load_source(opts.data, (height, width), opts.seed, negatives=opts.negatives)
    channels = int(dataset.train.images.shape[1])
    category = opts.category or dataset.category
    try:
        spec, weights, layout = whole_net(opts, channels)
        task = _task(opts, layout)
        keep = _keep(opts, task, output_shape(spec)[0], dataset.category)
        if keep is not None:
            dense = get_task(task).dense_output
            spec, weights = select_outputs(spec, weights, selection(output_shape(spec)[0], keep, dense))
        split = _split_node(spec, opts.split)
        cat_spec, cat_w, task_spec, task_w = split_spec(spec, weights, split, task)
    except (SpecError, TraceError) as exc:
        raise SiteAgentError(f"cannot import {opts.weights}: {exc}") from None
    mean, std = _normalisation(opts, layout, channels)
    prep = {"channels": channels, "size": [height, width], "resize": "bilinear", "divide": 255.0,
            "mean": list(mean), "std": list(std)}
    try:
        cat_spec = _with_meaning(cat_spec, PREPROCESS, prep)
        task_spec = _with_meaning(task_spec, OUTPUT, get_task(task).output.default(output_shape(task_spec),
                                                                                   category))
        cat_module, task_module = build_module(cat_spec, cat_w), build_module(task_spec, task_w)
    except SpecError as exc:
        raise SiteAgentError(f"cannot import {opts.weights}: {exc}") from None
    info = SiteInfo(
        site_id=opts.site_id, category=category, data=opts.data, size=height, seed=opts.seed, tasks=[task],
        architecture={"name": spec.metadata["family"], "imported": layout, "weights": Path(opts.weights).name,
                      "split": split, "input_shape": list(spec.input_shape), "kept_outputs": list(keep or [])},
        training={}, n_train=None, n_test=None, negatives=list(opts.negatives) if opts.negatives else None,
        input_size=[height, width] if height != width else None, mean=list(mean), std=list(std))
    train, test = normalise(dataset.train, info.mean, info.std), normalise(dataset.test, info.mean, info.std)
    metrics = _evaluate(cat_module, task_module, task, test)
    info.teacher_metrics = {task: metrics}
    info.feature_norm_mean = feature_norm_mean(cat_module, train.images)
    info.num_images = len(train)
    samples = train.subset(opts.share_samples, seed=opts.seed) if opts.share_samples else None
    save_modules(workspace, info, cat_module, {task: task_module}, samples)
    return info, metrics


def _normalisation(opts: ImportOptions, layout: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    vgg = layout != "fx" and channels == 3
    mean = opts.mean or (IMAGENET_MEAN if vgg else (0.0,) * channels)
    std = opts.std or (IMAGENET_STD if vgg else (1.0,) * channels)
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise SiteAgentError(f"--mean and --std need {channels} value(s) each (std > 0)")
    return tuple(mean), tuple(std)


@torch.no_grad()
def _evaluate(category: SpecModule, task_module: SpecModule, task: str, test: Any) -> dict[str, float]:
    keep = get_task(task).keep(test.labels)
    split = test if keep is None else test.take(keep.nonzero().flatten())
    if not len(split):
        raise SiteAgentError(f"the held-out split has no images to score {task} on")
    return evaluate(lambda x: task_module(category(x)), task, split.images, split.labels, split.masks)


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImportOptions", "import_site", "whole_net"]
