"""Probe images the coordinator owns: procedural textures, shapes and noise, never a site's data.

Data-free stitching (`probe_stitch`) fits h(f(P)) ~ f_S(P) on these: lower layers are generic
(edges, colours, textures), so two category modules can be aligned on images of neither category.
Deterministic in the seed; any channel count (1: luminance) and image size.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from transplant.data.drawing import REF_CANVAS, draw_clutter, paint_texture

if TYPE_CHECKING:
    from transplant.spec import ModuleSpec

_SALT = 0x9E0B  # keeps probe streams apart from every data set's streams
_KINDS = ("textured shapes", "texture", "noise")
_KIND_WEIGHTS = (0.6, 0.25, 0.15)
_MAX_SHAPES = 6
_SHAPE_SIZE = 11.0  # largest half-extent of a probe shape, reference-canvas units


def probe_images(n: int, shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """`n` probe images [n, C, H, W] in [0, 1] for a module reading `shape` = (C, H, W)."""
    channels, height, width = shape
    if n < 1 or channels < 1 or height < 1 or width < 1:
        raise ValueError(f"probe images need n >= 1 and a positive shape, got n={n}, shape={shape}")
    rng = np.random.default_rng([_SALT, seed, channels, height, width])
    size = max(height, width)
    g = (np.arange(size, dtype=np.float32) + 0.5) * (REF_CANVAS / size)
    y, x = np.meshgrid(g, g, indexing="ij")
    kind = rng.choice(len(_KINDS), n, p=_KIND_WEIGHTS)
    img = paint_texture(rng, n, x, y)                                   # [n, S, S, 3]
    xb, yb = np.broadcast_to(x, (n, size, size)), np.broadcast_to(y, (n, size, size))
    count = np.where(kind == 0, rng.integers(1, _MAX_SHAPES + 1, n), 0)
    for k in range(_MAX_SHAPES):
        drawn = draw_clutter(xb, yb, rng, n, _SHAPE_SIZE) & (k < count)[:, None, None]
        img = np.where(drawn[..., None], paint_texture(rng, n, x, y), img)
    noisy = kind == 2
    img[noisy] = rng.uniform(0, 1, img[noisy].shape).astype(np.float32)
    img = np.clip(img, 0, 1).astype(np.float32)[:, :height, :width]
    if channels == 1:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)[:, None]
    elif channels != 3:
        img = np.concatenate([img] * (channels // 3 + 1), -1)[..., :channels]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))


def probes_for(spec: "ModuleSpec", n: int, seed: int = 0) -> torch.Tensor:
    """`probe_images` fed as the module's site feeds it: its recorded normalisation (metadata.preprocess
    mean/std, e.g. ImageNet's for an imported VGG) applied; the same raw images for every module at one seed."""
    from transplant.spec.schema import preprocess_of

    prep = preprocess_of(spec)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(prep["std"], dtype=torch.float32).reshape(1, -1, 1, 1)
    return (probe_images(n, tuple(spec.input_shape), seed) - mean) / std
