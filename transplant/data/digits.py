"""scikit-learn's handwritten digits (ships with the package, nothing downloaded), upsampled."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from transplant.data.common import CategoryDataset, Split, binary_split, stratified_holdout


@lru_cache(maxsize=4)
def _digits(size: int) -> tuple[torch.Tensor, np.ndarray]:
    """All 1797 images as float32 [N, 1, size, size] in [0, 1], and their digit labels."""
    raw = load_digits()
    x = torch.from_numpy(raw.images.astype(np.float32) / 16.0).unsqueeze(1)  # pixel values 0..16
    if size != 8:  # bilinear, as VGG-style nets want more than 8x8 to pool over
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(0.0, 1.0), raw.target.astype(np.int64)


def _parse_digit(category: int | str) -> int:
    try:
        digit = int(category)
    except (TypeError, ValueError):
        raise ValueError(f"unknown digits category {category!r}: use 0..9") from None
    if not 0 <= digit <= 9:
        raise ValueError(f"unknown digits category {category!r}: use 0..9")
    return digit


def load_digits_category(category: int | str, seed: int = 0, size: int = 32,
                         test_fraction: float = 0.3) -> CategoryDataset:
    """Binary "this digit vs random other digits", as the paper's category-vs-random images.

    The train/test cut of the 1797 images depends only on `seed` (not on the category), so
    a generic module trained with `load_digits_multiclass(seed=seed)` never saw a test image.
    """
    digit = _parse_digit(category)
    images, digits = _digits(size)
    is_test = stratified_holdout(digits, test_fraction, seed)
    rng = np.random.default_rng([seed, digit, 7])  # per-category negatives; tag 7: [s, 0] equals [s]
    splits = []
    for part in (~is_test, is_test):
        pos = np.flatnonzero(part & (digits == digit))
        neg = np.flatnonzero(part & (digits != digit))
        idx, lab = binary_split(pos, neg, rng, balanced=True)
        splits.append(Split(images[idx].clone(), torch.from_numpy(lab), None))
    return CategoryDataset("digits", str(digit), splits[0], splits[1])


def load_digits_multiclass(size: int = 32, seed: int = 0, test_fraction: float = 0.3) -> tuple[Split, Split]:
    """(train, test) with labels 0..9, same cut as `load_digits_category` with the same seed."""
    images, digits = _digits(size)
    is_test = stratified_holdout(digits, test_fraction, seed)
    out = []
    for part in (~is_test, is_test):
        idx = np.flatnonzero(part)
        out.append(Split(images[idx].clone(), torch.from_numpy(digits[idx]), None))
    return out[0], out[1]
