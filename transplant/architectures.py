"""Specs for the paper's nets (VGG-16, FCN-8s) and small VGG-style families, split where the paper splits.

The category module is the first stage: conv1_1, relu1_1, conv1_2, relu1_2, pool1.
Everything above it is a task module: a VGG classifier (`classification`) and an FCN-8s
head with its skip branches (`segmentation`). Both task modules read the pool1 output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from transplant.spec.builder import SpecBuilder
from transplant.spec.schema import INPUT, ModuleSpec, SpecError
from transplant.spec.shapes import output_shape
from transplant.tasks import CLASSIFICATION, SEGMENTATION



@dataclass(frozen=True)
class VGGConfig:
    """A VGG-style family: stage widths and convs per stage; stage 1 is the category module."""

    in_channels: int = 3
    image_size: int = 32
    widths: tuple[int, ...] = (16, 32, 64, 64)
    convs: tuple[int, ...] = (2, 2, 2, 2)
    fc: tuple[int, ...] = (128, 128)
    num_outputs: int = 1        # classification logits (1 = single-category, binary)
    seg_classes: int = 2        # background + the category
    dropout: float = 0.5
    name: str = "vgg-small"

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.convs) or len(self.widths) < 3:  # FCN skips need 2 maps below the top
            raise SpecError("a VGG family needs at least 3 stages and one conv count per stage")
        if self.image_size % (2 ** len(self.widths)):
            raise SpecError(f"image_size must be divisible by 2**stages = {2 ** len(self.widths)}")


VGG16 = VGGConfig(in_channels=3, image_size=224, widths=(64, 128, 256, 512, 512), convs=(2, 2, 3, 3, 3),
                  fc=(4096, 4096), num_outputs=1, seg_classes=2, name="vgg16")


@dataclass(frozen=True)
class TeacherSpecs:
    """A teacher net as modules: one category module and its task modules."""

    config: VGGConfig
    category: ModuleSpec
    tasks: dict[str, ModuleSpec] = field(default_factory=dict)


def _stage(b: SpecBuilder, stage: int, width: int, convs: int) -> str:
    for i in range(1, convs + 1):
        b.conv_relu(f"conv{stage}_{i}", width)
    return b.add(f"pool{stage}", "maxpool2d", kernel_size=2, stride=2)


def category_spec(cfg: VGGConfig) -> ModuleSpec:
    b = SpecBuilder(f"{cfg.name}.category", (cfg.in_channels, cfg.image_size, cfg.image_size),
                    {"role": "category", "family": cfg.name})
    _stage(b, 1, cfg.widths[0], cfg.convs[0])
    return b.build()


def _trunk(b: SpecBuilder, cfg: VGGConfig) -> list[str]:
    """Stages 2..n of the task module; returns the pool node names."""
    return [_stage(b, s, w, c) for s, (w, c) in enumerate(zip(cfg.widths[1:], cfg.convs[1:]), start=2)]


def _task_builder(cfg: VGGConfig, task: str) -> SpecBuilder:
    x_shape = output_shape(category_spec(cfg))
    return SpecBuilder(f"{cfg.name}.{task}", x_shape, {"role": "task", "task": task, "family": cfg.name})


def classification_spec(cfg: VGGConfig) -> ModuleSpec:
    b = _task_builder(cfg, CLASSIFICATION)
    last = _trunk(b, cfg)[-1]
    b.add("flatten", "flatten")
    width = 1
    for s in b.shape(last):
        width *= s
    for i, units in enumerate(cfg.fc, start=6):
        b.add(f"fc{i}", "linear", in_features=width, out_features=units)
        b.add(f"relu{i}", "relu")
        b.add(f"drop{i}", "dropout", p=cfg.dropout)
        width = units
    b.add(f"fc{6 + len(cfg.fc)}", "linear", in_features=width, out_features=cfg.num_outputs)
    return b.build()


def segmentation_spec(cfg: VGGConfig) -> ModuleSpec:
    """FCN-8s: fc layers as convs, score from the last pool, 2x upsample + skip from the two pools below."""
    b = _task_builder(cfg, SEGMENTATION)
    pools = _trunk(b, cfg)
    top = b.shape(pools[-1])
    kernel = min(7, top[1]) | 1  # fc6 as a same-size conv; 7x7 in VGG-16, smaller on tiny maps
    width, classes = top[0], cfg.seg_classes
    for i, units in enumerate(cfg.fc, start=6):
        k = kernel if i == 6 else 1
        b.add(f"fc{i}", "conv2d", in_channels=width, out_channels=units, kernel_size=k, padding=k // 2)
        b.add(f"relu{i}", "relu")
        b.add(f"drop{i}", "dropout", p=cfg.dropout)
        width = units
    score = b.add("score_fr", "conv2d", in_channels=width, out_channels=classes, kernel_size=1)
    sources = [INPUT, *pools[:-1]]  # skip branches from the two maps below the top (FCN-8s: pool4, pool3)
    for skip, pool in zip(("a", "b"), (sources[-1], sources[-2])):
        up = b.add(f"upscore_{skip}", "conv_transpose2d", score, in_channels=classes, out_channels=classes,
                   kernel_size=4, stride=2, bias=False)
        channels = b.input_shape[0] if pool == INPUT else b.shape(pool)[0]
        side = b.add(f"score_{pool}", "conv2d", pool, in_channels=channels, out_channels=classes,
                     kernel_size=1)
        crop = b.add(f"crop_{skip}", "crop", up, side, offset=1)
        score = b.add(f"fuse_{pool}", "add", crop, side)
    factor = cfg.image_size // b.shape(score)[1]  # 8 for VGG-16
    b.add("upscore_final", "conv_transpose2d", score, in_channels=classes, out_channels=classes,
          kernel_size=2 * factor, stride=factor, bias=False)
    b.add("score", "crop", offset=factor // 2, size=cfg.image_size)
    return b.build()


# the task heads this family builds, per task type (transplant.tasks); the tasks a site can train
TASK_HEADS = {CLASSIFICATION: classification_spec, SEGMENTATION: segmentation_spec}
TASKS = tuple(TASK_HEADS)


def teacher_specs(cfg: VGGConfig, tasks: tuple[str, ...] = TASKS) -> TeacherSpecs:
    return TeacherSpecs(cfg, category_spec(cfg), {t: TASK_HEADS[t](cfg) for t in tasks})


def vgg_small(width: int = 16, depth: int = 4, image_size: int = 32, in_channels: int = 3,
              fc: int = 128, convs_per_stage: int = 2) -> VGGConfig:
    """A VGG-style family that trains on a CPU in seconds to minutes (width doubles up to 4x)."""
    widths = tuple(width * min(2 ** s, 4) for s in range(depth))
    return VGGConfig(in_channels=in_channels, image_size=image_size, widths=widths,
                     convs=(convs_per_stage,) * depth, fc=(fc, fc), name=f"vgg-w{width}-d{depth}")


# torchvision's VGG-16 `features.<i>` indices of the 13 convs, and `classifier.<i>` of the 3 fcs
_TV_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_TV_FCS = (0, 3, 6)


def torchvision_vgg_names(cfg: VGGConfig) -> dict[str, str]:
    """torchvision parameter prefix -> our node name, for any VGG family laid out like torchvision's."""
    names: dict[str, str] = {}
    index = 0
    for stage, convs in enumerate(cfg.convs, start=1):
        for i in range(1, convs + 1):
            names[f"features.{index}"] = f"conv{stage}_{i}"
            index += 2  # conv, relu
        index += 1  # pool
    for i, tv in enumerate(range(len(cfg.fc) + 1)):
        names[f"classifier.{3 * tv}"] = f"fc{6 + i}"
    return names


def load_torchvision_vgg(state_dict_or_path: Mapping[str, torch.Tensor] | str | Path, cfg: VGGConfig = VGG16
                         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Map a torchvision VGG `state_dict` (a local file, never downloaded) onto (category, classification) weights.

    `.pth` files are read with `torch.load(weights_only=True)`, which refuses arbitrary pickled code.
    """
    state = _read_state_dict(state_dict_or_path)
    category_names = {n for n in (f"conv1_{i}" for i in range(1, cfg.convs[0] + 1))}
    category: dict[str, torch.Tensor] = {}
    task: dict[str, torch.Tensor] = {}
    for prefix, node in torchvision_vgg_names(cfg).items():
        for param in ("weight", "bias"):
            key = f"{prefix}.{param}"
            if key not in state:
                raise SpecError(f"torchvision state_dict has no '{key}' (for node '{node}')")
            target = category if node in category_names else task
            target[f"{node}.{param}"] = state[key].detach().to(torch.float32).contiguous()
    return category, task


def _read_state_dict(source: Mapping[str, torch.Tensor] | str | Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
