"""Nets a site "already has", built without torchvision: the project's own VGG-16 / FCN-8s definitions with
random weights, renamed to torchvision's key layout; small models for the torch.fx path; image trees on disk."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from transplant.architectures import VGGConfig, teacher_specs, torchvision_vgg_names
from transplant.spec import build_module

# VGG-16's layout (5 stages of 2, 2, 3, 3, 3 convs, 3 fcs), narrow enough to run in milliseconds
NARROW_VGG16 = VGGConfig(in_channels=3, image_size=32, widths=(8, 16, 16, 16, 16), convs=(2, 2, 3, 3, 3),
                         fc=(16, 16), name="vgg16-narrow")
FCN_HEAD_NAMES = {"upscore_a": "upscore2", "upscore_b": "upscore_pool4", "upscore_final": "upscore8"}


def _random_weights(specs: dict, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    ours: dict[str, torch.Tensor] = {}
    for spec in specs.values():
        for name, value in build_module(spec).weights().items():
            ours[name] = torch.randn_like(value) * (2.0 / max(1, value[0].numel())) ** 0.5
    return ours


def vgg_state_dict(outputs: int = 2, seed: int = 0, cfg: VGGConfig = NARROW_VGG16
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(torchvision-layout state dict, the same weights under the project's node names)."""
    cfg = dataclasses.replace(cfg, num_outputs=outputs)
    specs = teacher_specs(cfg, ("classification",))
    ours = _random_weights({"c": specs.category, "t": specs.tasks["classification"]}, seed)
    to_tv = {node: prefix for prefix, node in torchvision_vgg_names(cfg).items()}
    return {f"{to_tv[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in ours.items()}, ours


def fcn_state_dict(classes: int = 21, seed: int = 0, side: int = 64
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(FCN-8s state dict: trunk as torchvision's features.N, head under the FCN-8s names; the project's names)."""
    cfg = dataclasses.replace(NARROW_VGG16, image_size=side, seg_classes=classes, name="fcn8s-narrow")
    specs = teacher_specs(cfg, ("segmentation",))
    ours = _random_weights({"c": specs.category, "t": specs.tasks["segmentation"]}, seed)
    features = {node: prefix for prefix, node in torchvision_vgg_names(cfg).items() if prefix.startswith("features")}
    rename = {**features, **FCN_HEAD_NAMES}
    return {f"{rename.get(k.split('.')[0], k.split('.')[0])}.{k.split('.')[1]}": v for k, v in ours.items()}, ours


def project_net(cfg: VGGConfig, task: str, ours: dict[str, torch.Tensor]) -> nn.Module:
    """The project's own category + task module with these weights: the reference an import must equal."""
    specs = teacher_specs(cfg, (task,))
    category = build_module(specs.category, {k: v for k, v in ours.items() if k.startswith("conv1_")})
    head = build_module(specs.tasks[task], {k: v for k, v in ours.items() if not k.startswith("conv1_")})
    return nn.Sequential(category, head).eval()


class SmallNet(nn.Module):
    """A site's own model: conv, batch norm, pools, a residual add, an adaptive pool and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.head = nn.Linear(8 * 9, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.body(x)) + x
        return self.head(torch.flatten(self.pool(x), 1))


class GeluNet(SmallNet):
    """Like SmallNet with one op outside the closed set (GELU)."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        return self.head(torch.flatten(self.pool(x), 1))


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return SmallNet()


def gelu_net() -> nn.Module:
    return GeluNet()


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (40, 56), seed: int = 0) -> Path:
    """root/<class>/<i>.png: random images, each class a different mean colour (a learnable difference)."""
    rng = np.random.default_rng(seed)
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            base = np.array([60 + 60 * k, 200 - 50 * k, 120], np.float32)
            pixels = np.clip(base + rng.normal(0, 30, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (bit-interleaved), as its SegmentationClass PNGs carry it."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc(root: Path, objects: dict[str, list[int]], side: int = 48, seed: int = 0) -> Path:
    """A VOC-layout tree: JPEGImages/*.jpg, SegmentationClass/*.png (palette, class indices, 255 borders),
    ImageSets/Segmentation/{train,val}.txt. `objects`: split -> the VOC class index drawn in each image."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, classes in objects.items():
        names = []
        for i, cls in enumerate(classes):
            name = f"2007_{split}_{i:04d}"
            pixels = rng.integers(0, 80, (side, side, 3)).astype(np.uint8)
            mask = np.zeros((side, side), np.uint8)
            y, x, r = rng.integers(side // 4, 3 * side // 4, 2).tolist() + [side // 5]
            yy, xx = np.mgrid[:side, :side]
            inside = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
            border = ((yy - y) ** 2 + (xx - x) ** 2 <= (r + 1) ** 2) & ~inside
            mask[inside], mask[border] = cls, 255
            pixels[inside] = [200, 60 + 7 * cls, 40]
            Image.fromarray(pixels).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(voc_palette())
            png.save(root / "SegmentationClass" / f"{name}.png")
            names.append(name)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root
