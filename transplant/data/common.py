"""Containers shared by all data sources: a labelled split and a per-category binary data set."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Split:
    """Images with labels and (optionally) segmentation masks."""

    images: torch.Tensor  # float32 [N, C, H, W] in [0, 1]
    labels: torch.Tensor  # int64 [N]; binary data sets: 1 = the category, 0 = other
    masks: torch.Tensor | None = None  # int64 [N, H, W]; 1 = object pixel, 0 = background

    def __post_init__(self) -> None:
        # Fail at construction rather than deep inside a training loop.
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(f"bad split shapes: images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)}")
        if self.masks is not None and self.masks.shape != (len(self.images), *self.images.shape[2:]):
            raise ValueError(f"masks {tuple(self.masks.shape)} do not match images {tuple(self.images.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> Split:
        """The samples at `index` (a long tensor), in that order."""
        masks = None if self.masks is None else self.masks[index]
        return Split(self.images[index], self.labels[index], masks)

    def subset(self, n: int, seed: int, balanced: bool = True) -> Split:
        """`n` samples for few-shot training, deterministic in `seed`.

        Balanced draws go round-robin over the classes, so a class short of samples leaves its
        share to the others, and subset(10, s) is contained in subset(20, s): few-shot sweeps
        then only ever add samples.
        """
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        n = min(n, len(self))
        gen = torch.Generator().manual_seed(seed)
        if not balanced:
            return self.take(torch.randperm(len(self), generator=gen)[:n])
        classes = torch.unique(self.labels)
        classes = classes[torch.randperm(len(classes), generator=gen)]  # which class goes first
        pools = []
        for c in classes:
            idx = torch.nonzero(self.labels == c).flatten()
            pools.append(idx[torch.randperm(len(idx), generator=gen)].tolist())
        order: list[int] = []
        depth = 0
        while len(order) < n:
            for pool in pools:
                if depth < len(pool) and len(order) < n:
                    order.append(pool[depth])
            depth += 1
        return self.take(torch.tensor(order, dtype=torch.long))


@dataclass
class CategoryDataset:
    """One category as a binary problem (category vs other images), the paper's setting."""

    dataset: str  # "digits" | "shapes" | "folder" | "voc"
    category: str
    train: Split
    test: Split  # balanced: as many positives as negatives


def feature_norm_images(split: Split, n: int = 64) -> torch.Tensor:
    """A fixed sample of `n` images, e.g. for E||f(I)||_F (the rescaling beta).

    Fixed seed so that two sites computing the statistic on the same data agree.
    """
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(split), generator=gen)[: min(n, len(split))]
    return split.images[torch.sort(idx).values]


def binary_split(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator,
                 balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pick positives and negatives (indices) for a binary split.

    Negatives are a random sample of as many as there are positives ("category vs random
    images"). With `balanced`, positives are cut too so that both classes have the same size.
    Returns (indices, labels), shuffled.
    """
    k_neg = min(len(pos), len(neg))
    k_pos = k_neg if balanced else len(pos)
    pos = rng.permutation(pos)[:k_pos]
    neg = rng.permutation(neg)[:k_neg]
    idx = np.concatenate([pos, neg]).astype(np.int64)
    lab = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
    order = rng.permutation(len(idx))
    return idx[order], lab[order]


def stratified_holdout(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean "is test" per sample: `test_fraction` of every class, fixed by `seed`.

    Every category derived from the same pool then shares one train/test cut, so an image
    is never in the train split of one category and the test split of another.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:  # keep at least one image on each side where possible
            k = min(max(k, 1), len(idx) - 1)
        is_test[idx[:k]] = True
    return is_test
