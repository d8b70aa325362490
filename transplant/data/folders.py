"""Users' own images on local disk: an ImageFolder tree or a PASCAL-VOC-style segmentation tree."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transplant.data.common import CategoryDataset, Split, binary_split, stratified_holdout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_VOID = 255  # "difficult / object border" pixels in VOC masks


def _dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ValueError(f"{what} folder does not exist: {path}")
    return path


def preprocess_image(im: Image.Image, channels: int = 3, size: tuple[int, int] | int = 32, divide: float = 255.0,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """The one definition of how an image becomes a net's input: float32 [channels, H, W].

    Greyscale (channels 1) or RGB (3; alpha and palettes are dropped by PIL's conversion), bilinear
    resize to (H, W), divided by `divide` (255: [0, 1]), then (x - mean) / std per channel. The data
    loaders and `transplant.predict` both call this, so training and prediction cannot drift apart.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels}")
    im = im.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(im, dtype=np.float32).reshape(height, width, channels).transpose(2, 0, 1) / divide
    if mean is not None or std is not None:
        m = np.asarray(mean if mean is not None else [0.0] * channels, np.float32)[:, None, None]
        s = np.asarray(std if std is not None else [1.0] * channels, np.float32)[:, None, None]
        array = (array - m) / s
    return np.ascontiguousarray(array, dtype=np.float32)


Size = int | tuple[int, int]  # a side, or (H, W) for non-square nets


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _read_image(path: Path, size: Size) -> np.ndarray:
    """RGB float32 [3, H, W] in [0, 1]; every source becomes 3 channels so nets can be shared."""
    with Image.open(path) as im:
        return preprocess_image(im, 3, size)


def _stack(images: list[np.ndarray], size: Size) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)) if images else torch.zeros(0, 3, *_hw(size))


def load_image_folder(root: str | Path, category: str, size: Size = 32, seed: int = 0,
                      test_fraction: float = 0.3, negatives: Sequence[str] | None = None) -> CategoryDataset:
    """`root/<class>/*.png|jpg` as binary "category vs negatives" with a balanced test set.

    Negatives are the images of every other class folder, or of the folders named in `negatives`
    only (say, a folder of random images: the paper's "category vs random images"; a classifier
    trained to reject a similar category cannot be transplanted to accept it). The train/test cut of
    each class depends only on `seed`, so the same image is never in one category's train split and
    another's test split.
    """
    root = _dir(Path(root), "image")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, c) for c in classes for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"no images (*.png, *.jpg, *.jpeg) in class folders under {root}")
    category = str(category)
    if category not in classes:
        raise ValueError(f"unknown category {category!r} in {root}: folders are {', '.join(classes)}")
    if negatives is not None:
        unknown = sorted(set(negatives) - set(classes))
        if unknown or category in negatives or not negatives:
            raise ValueError(f"negatives must name other class folders under {root} ({', '.join(classes)}); "
                             f"got {', '.join(negatives) or 'none'}")
        files = [(f, c) for f, c in files if c == category or c in negatives]
    owner = np.array([classes.index(c) for _, c in files])
    target = classes.index(category)
    if not np.any(owner == target):
        raise ValueError(f"no images for category {category!r} in {root / category}")
    if np.all(owner == target):
        raise ValueError(f"no images of other categories under {root}: a binary data set needs negatives")
    is_test = stratified_holdout(owner, test_fraction, seed)
    rng = np.random.default_rng([seed, target, 7])  # trailing tag: [s, 0] would equal [s]
    splits = []
    for part, balanced in ((~is_test, False), (is_test, True)):
        idx, lab = binary_split(np.flatnonzero(part & (owner == target)), np.flatnonzero(part & (owner != target)),
                                rng, balanced)
        images = _stack([_read_image(files[i][0], size) for i in idx], size)
        splits.append(Split(images, torch.from_numpy(lab), None))
    return CategoryDataset("folder", category, splits[0], splits[1])


def voc_class_index(category: int | str) -> int:
    """A VOC class index (0..20) from an index or a standard class name."""
    if isinstance(category, str) and not category.isdigit():
        if category.lower() not in VOC_CLASSES:
            raise ValueError(f"unknown VOC category {category!r}: use one of {', '.join(VOC_CLASSES)}")
        return VOC_CLASSES.index(category.lower())
    idx = int(category)
    if not 0 <= idx < len(VOC_CLASSES):
        raise ValueError(f"unknown VOC category index {idx}: use 0..{len(VOC_CLASSES) - 1}")
    return idx


def _read_voc_mask(path: Path, image_size: tuple[int, int], cls: int, size: Size) -> np.ndarray:
    """Binary int64 [H, W]: 1 where the pixel is `cls`; void (255) counts as background."""
    return (_read_voc_classes(path, image_size, size) == cls).astype(np.int64)


def _read_voc_classes(path: Path, image_size: tuple[int, int], size: Size) -> np.ndarray:
    """The class index of every pixel, [H, W] (a palette PNG's indices are the classes; 255: void)."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise ValueError(f"mask {path} has mode {im.mode}: expected a palette (P) or greyscale (L) PNG "
                             "of class indices")
        if im.size != image_size:
            (w, h), (iw, ih) = im.size, image_size
            raise ValueError(f"mask {path} is {w}x{h} but its image is {iw}x{ih}")
        # nearest neighbour: class indices must not be blended
        height, width = _hw(size)
        return np.asarray(im.resize((width, height), Image.Resampling.NEAREST))


def load_voc_split(root: str | Path, category: int | str, split: str = "train", size: Size = 32,
                   negatives: Sequence[int | str] | None = None) -> Split:
    """All images listed in `ImageSets/Segmentation/<split>.txt`; label 1 if the class is present. With
    `negatives` (VOC classes), an image without the class is kept only if it shows one of them."""
    root = Path(root)
    cls = voc_class_index(category)
    jpeg, seg = _dir(root / "JPEGImages", "VOC JPEGImages"), _dir(root / "SegmentationClass", "VOC SegmentationClass")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise ValueError(f"VOC split list does not exist: {listing}")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    keep = None if negatives is None else [cls, *(voc_class_index(n) for n in negatives)]
    if keep is not None and (cls in keep[1:] or len(keep) < 2):
        raise ValueError(f"negatives must name VOC classes other than {VOC_CLASSES[cls]!r}")
    if not ids:
        raise ValueError(f"no images listed in {listing}")
    images, masks = [], []
    for name in ids:
        img_path, mask_path = jpeg / f"{name}.jpg", seg / f"{name}.png"
        for p in (img_path, mask_path):
            if not p.is_file():
                raise ValueError(f"{listing} lists {name!r} but {p} does not exist")
        with Image.open(img_path) as im:
            image_size = im.size
        classes = _read_voc_classes(mask_path, image_size, size)
        if keep is not None and not np.isin(classes, keep).any():
            continue
        masks.append((classes == cls).astype(np.int64))
        images.append(_read_image(img_path, size))
    if not masks:
        raise ValueError(f"no image in {listing} shows {VOC_CLASSES[cls]!r} or one of the negatives")
    mask_t = torch.from_numpy(np.stack(masks))
    labels = (mask_t.flatten(1).amax(1) > 0).long()
    return Split(_stack(images, size), labels, mask_t)


def load_voc_folder(root: str | Path, category: int | str, size: Size = 32, seed: int = 0,
                    train_split: str = "train", test_split: str = "val",
                    negatives: Sequence[int | str] | None = None) -> CategoryDataset:
    """Binary "category vs rest" with masks: train from `train_split`, balanced test from `test_split`.

    Negatives are the listed images that do not show the category, or, with `negatives` (VOC class names
    or indices), only those that show one of these classes. Train keeps every image showing the category
    plus as many random negatives; the test set keeps as many of each so that it is balanced.
    """
    cls = voc_class_index(category)
    rng = np.random.default_rng([seed, cls, 7])  # trailing tag: [s, 0] would equal [s]
    out = []
    for split, balanced in ((train_split, False), (test_split, True)):
        full = load_voc_split(root, cls, split, size, negatives)
        lab = full.labels.numpy()
        idx, _ = binary_split(np.flatnonzero(lab == 1), np.flatnonzero(lab == 0), rng, balanced)
        out.append(full.take(torch.from_numpy(idx)))
    return CategoryDataset("voc", VOC_CLASSES[cls], out[0], out[1])
