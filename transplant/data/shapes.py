"""Procedural object images with pixel-exact masks: a stand-in for PASCAL VOC that ships as code.

Every object is drawn as a boolean mask in its own frame (drawing.py: body, head, legs... as ellipses,
capsules and convex polygons), then composited over a textured, cluttered background. The mask
is therefore exactly the set of pixels that show the object (front distractors cut it).
Object, background and distractor colours come from one distribution, so colour or intensity
alone does not separate them: a model has to use shape.

All geometry is in units of a 32-pixel reference canvas, so `size` only changes resolution.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from transplant.data.common import CategoryDataset, Split
from transplant.data.drawing import BACKGROUND, OBJECTS as _OBJECTS, REF_CANVAS as _REF, Arr
from transplant.data.drawing import draw_clutter as _distractor, paint_texture as _texture, per_image as _c

SIMILAR: tuple[str, ...] = ("cat", "cow", "dog", "horse", "sheep")  # the paper's mammals
DISSIMILAR: tuple[str, ...] = ("aeroplane", "bicycle", "bird", "boat")  # VOC's first four
CATEGORIES: tuple[str, ...] = SIMILAR + DISSIMILAR
# The paper's classifiers are "a category vs random images": negatives from the dissimilar categories
# and plain backgrounds, never the other similar categories (a dog net trained to reject cats cannot be
# made to accept a cat by any faithful adapter). HARD: every other category, the stricter variant.
RANDOM_NEGATIVES: tuple[str, ...] = DISSIMILAR + (BACKGROUND,)
HARD_NEGATIVES: tuple[str, ...] = CATEGORIES

_SALT = 0x5A4E  # keeps these streams apart from other users of the same integer seeds
_TRAIN, _TEST, _MULTI, _RENDER = 0, 1, 2, 3  # stream kinds: train and test images never share a stream
# difficulty knobs, tuned so that a small FCN learns the masks and colour thresholds do not
_OBJ_SCALE = 1.35  # objects cover about 15-35% of the image
_SHIFT = 3.0  # object centre jitter, canvas units
_CLUTTER = (4, 8)  # distractors behind the object, per image
_CLUTTER_SIZE = 7.0  # their largest half-extent, canvas units


# ---------------------------------------------------------------- rendering
Painter = Callable[[np.random.Generator, int, Arr, Arr], Arr]


def _render(category: str, n: int, rng: np.random.Generator, size: int,
            paint_object: Painter = _texture, paint_other: Painter = _texture) -> tuple[Arr, Arr]:
    """Images [n, 3, S, S] and boolean masks [n, S, S]; the painters are swappable for tests."""
    shape, rot, (s_lo, s_hi) = _OBJECTS[category]
    g = (np.arange(size, dtype=np.float32) + 0.5) * (_REF / size)  # pixel centres in canvas units
    y, x = np.meshgrid(g, g, indexing="ij")
    # inverse similarity transform: canvas -> object frame (rotation, scale, mirror, position)
    th, sc = np.deg2rad(rng.uniform(-rot, rot, n)), rng.uniform(s_lo, s_hi, n) * _OBJ_SCALE
    flip = rng.choice([-1.0, 1.0], n)
    tx, ty = _REF / 2 + rng.uniform(-_SHIFT, _SHIFT, n), _REF / 2 + rng.uniform(-_SHIFT, _SHIFT, n)
    dx, dy = x - _c(tx), y - _c(ty)
    u = (_c(np.cos(th)) * dx + _c(np.sin(th)) * dy) / _c(sc) * _c(flip)
    v = (_c(np.cos(th)) * dy - _c(np.sin(th)) * dx) / _c(sc)
    obj = shape(u.astype(np.float32), v.astype(np.float32), rng, n)

    img = paint_other(rng, n, x, y)  # background
    xb, yb = np.broadcast_to(x, (n, size, size)), np.broadcast_to(y, (n, size, size))
    count = rng.integers(_CLUTTER[0], _CLUTTER[1] + 1, n)
    for k in range(_CLUTTER[1]):  # clutter behind the object
        d = _distractor(xb, yb, rng, n, _CLUTTER_SIZE) & _c(k < count).astype(bool)
        img = np.where(d[..., None], paint_other(rng, n, x, y), img)
    img = np.where(obj[..., None], paint_object(rng, n, x, y), img)
    for _ in range(2):  # small occluders in front: they cut the mask too
        d = _distractor(xb, yb, rng, n, 2.5) & _c(rng.uniform(0, 1, n) < 0.3).astype(bool)
        img = np.where(d[..., None], paint_other(rng, n, x, y), img)
        obj &= ~d
    img = (img - 0.5) * _c(rng.uniform(0.8, 1.1, n))[..., None] + 0.5 + _c(rng.uniform(-0.05, 0.05, n))[..., None]
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32).transpose(0, 3, 1, 2), obj


_NAMES = CATEGORIES + ("", BACKGROUND)  # index len(CATEGORIES) is the picks-and-order stream of a split


def _check(category: str, negative: bool = False) -> int:
    if category == BACKGROUND and negative:
        return _NAMES.index(BACKGROUND)
    if category not in CATEGORIES:
        extra = f" (or '{BACKGROUND}' as a negative)" if negative else ""
        raise ValueError(f"unknown shapes category {category!r}: use one of {', '.join(CATEGORIES)}{extra}")
    return CATEGORIES.index(category)


def _stream(kind: int, seed: int, a: int = 0, b: int = 0) -> np.random.Generator:
    """Independent generator per purpose. Fixed-length keys: numpy's SeedSequence treats
    [x, y] and [x, y, 0] as the same entropy, so variable-length keys could collide."""
    if seed < 0:
        raise ValueError(f"shapes seeds must be >= 0, got {seed}")
    return np.random.default_rng([_SALT, kind, seed, a, b])


def render(category: str, n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images of `category`: float32 [n, 3, size, size] in [0, 1] and int64 masks [n, size, size]."""
    images, masks = _render(category, n, _stream(_RENDER, seed, _check(category)), size)
    return torch.from_numpy(images), torch.from_numpy(masks.astype(np.int64))


def _binary_split(cat: int, others: Sequence[int], n: int, seed: int, stream: int, size: int) -> Split:
    """Half images of `cat` (their masks), half of random `others` (masks all zero for `cat`)."""
    rng = _stream(stream, seed, cat, len(CATEGORIES))  # picks and order
    n_pos = n - n // 2
    picks = rng.choice(np.asarray(others), n // 2)
    parts = [(_render(CATEGORIES[cat], n_pos, _stream(stream, seed, cat, cat), size), 1)]
    for o in others:  # each negative category from its own stream: adding one changes no other
        k = int(np.sum(picks == o))
        if k:
            parts.append((_render(_NAMES[o], k, _stream(stream, seed, cat, o), size), 0))
    images = np.concatenate([im for (im, _), _ in parts])
    masks = np.concatenate([m * lab for (_, m), lab in parts]).astype(np.int64)
    labels = np.concatenate([np.full(len(im), lab, np.int64) for (im, _), lab in parts])
    order = rng.permutation(len(labels))
    return Split(torch.from_numpy(images[order]), torch.from_numpy(labels[order]), torch.from_numpy(masks[order]))


def load_shapes_category(category: str, n_train: int = 1000, n_test: int = 400, seed: int = 0, size: int = 32,
                         negatives: Sequence[str] | None = None) -> CategoryDataset:
    """Binary data set with masks: half images of `category`, half negatives.

    `negatives` lists the categories negatives are drawn from, `background` included; default:
    RANDOM_NEGATIVES, the paper's "category vs random images" (dissimilar categories and plain
    backgrounds); HARD_NEGATIVES rejects every other category. Train and test come from
    different random streams, so no image is in both. `n_test` is rounded down to even so the
    test set is balanced.
    """
    cat = _check(category)
    others = [_check(c, negative=True) for c in (negatives if negatives is not None else RANDOM_NEGATIVES)
              if c != category]
    if not others:
        raise ValueError("shapes negatives need at least one category other than the target")
    train = _binary_split(cat, others, n_train, seed, _TRAIN, size)
    test = _binary_split(cat, others, n_test - n_test % 2, seed, _TEST, size)
    return CategoryDataset("shapes", category, train, test)


def load_shapes_multicategory(categories: Sequence[str], n_per_category: int, seed: int = 0, size: int = 32) -> Split:
    """Images of several categories for a generic ("leave-one-out") task module.

    labels = index into `categories`; masks = 1 on the object, whatever its category
    (multi-class masks are `masks * (labels + 1)[:, None, None]`). Drawn from a stream of its
    own, so these images never coincide with a `load_shapes_category` test set.
    """
    idx = [_check(c) for c in categories]
    parts = [_render(CATEGORIES[c], n_per_category, _stream(_MULTI, seed, c), size) for c in idx]
    labels = np.repeat(np.arange(len(idx), dtype=np.int64), n_per_category)
    order = _stream(_MULTI, seed, len(CATEGORIES)).permutation(len(labels))
    images = np.concatenate([p[0] for p in parts])[order]
    masks = np.concatenate([p[1] for p in parts]).astype(np.int64)[order]
    return Split(torch.from_numpy(images), torch.from_numpy(labels[order]), torch.from_numpy(masks))
