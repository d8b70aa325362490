"""Users' own folders: ImageFolder and PASCAL-VOC layouts, on tiny trees written here."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transplant.data import VOC_CLASSES, load_image_folder, load_voc_folder, load_voc_split


def _image_folder(root: Path, counts: dict[str, int]) -> Path:
    # every image a flat colour encoding (class, number) in coarse steps that survive JPEG
    for ci, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for k in range(count):
            colour = (16 * k + 8, 60 * ci + 30, 50 + ci * 40)
            suffix = "png" if k % 2 else "jpg"
            Image.new("RGB", (12, 9), colour).save(root / name / f"{k}.{suffix}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_binary_balanced_disjoint(tmp_path):
    root = _image_folder(tmp_path / "imgs", {"cat": 10, "dog": 8, "car": 12})
    d = load_image_folder(root, "cat", size=16, seed=0)
    assert d.dataset == "folder" and d.category == "cat"
    assert d.train.images.shape[1:] == (3, 16, 16) and d.train.masks is None
    assert int(d.test.labels.sum()) * 2 == len(d.test) == 6  # 3 of 10 cats held out, 3 others
    assert int(d.train.labels.sum()) == 7
    # positives are the cat folder's images (blue channel 50), negatives are not
    blue = d.train.images[:, 2].mean((1, 2)) * 255
    assert torch.equal((blue - 50).abs() < 8, d.train.labels == 1)
    # same seed, other category: no image crosses between train and test
    other = load_image_folder(root, "dog", size=16, seed=0)
    def key(s):
        return {(round((img[0, 0, 0].item() * 255 - 8) / 16), round((img[1, 0, 0].item() * 255 - 30) / 60))
                for img in s.images}

    assert not (key(d.train) | key(other.train)) & (key(d.test) | key(other.test))
    again = load_image_folder(root, "cat", size=16, seed=0)
    assert torch.equal(again.test.images, d.test.images)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "missing", "cat")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty", "cat")
    root = _image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    with pytest.raises(ValueError, match="unknown category 'cow'"):
        load_image_folder(root, "cow")


def _voc(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """Six 20x16 images: a cat (class 8) box in the first three, a dog (12) in the others, void borders."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    names = [f"2007_{k:06d}" for k in range(6)]
    for k, name in enumerate(names):
        Image.new("RGB", (20, 16), (30 * k, 80, 120)).save(root / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((16, 20), np.uint8)
        mask[4:12, 5:15] = 255  # void border
        mask[5:11, 6:14] = 8 if k < 3 else 12
        im = Image.fromarray(mask, mode="L").convert("P")
        if sizes and name in sizes:
            im = im.resize(sizes[name], Image.NEAREST)
        im.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[0:2] + names[3:5]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text(f"{names[2]}\n{names[5]}\n")
    return root


def test_voc_folder_masks_labels(tmp_path):
    root = _voc(tmp_path / "voc")
    for category in ("cat", 8, "8"):
        d = load_voc_folder(root, category, size=16)
        assert d.dataset == "voc" and d.category == "cat"
        assert len(d.train) == 4 and len(d.test) == 2 and int(d.test.labels.sum()) == 1
    full = load_voc_split(root, "cat", "train", size=20)
    assert full.masks.shape == (4, 20, 20) and full.masks.dtype == torch.int64
    assert full.labels.tolist() == [1, 1, 0, 0]
    area = full.masks.flatten(1).sum(1)
    assert area[0] > 0 and area[2] == 0 and set(full.masks.unique().tolist()) == {0, 1}  # void -> 0
    # a 6x8 box out of 16x20, resized to 20x20 by nearest neighbour
    assert abs(area[0].item() / 400 - 48 / 320) < 0.03
    assert VOC_CLASSES[12] == "dog" and len(VOC_CLASSES) == 21


def test_voc_errors(tmp_path):
    with pytest.raises(ValueError, match="JPEGImages"):
        load_voc_folder(tmp_path / "nothing", "cat")
    root = _voc(tmp_path / "voc")
    with pytest.raises(ValueError, match="unknown VOC category"):
        load_voc_folder(root, "unicorn")
    with pytest.raises(ValueError, match="unknown VOC category"):
        load_voc_folder(root, 21)
    with pytest.raises(ValueError, match="split list does not exist"):
        load_voc_folder(root, "cat", test_split="test")
    bad = _voc(tmp_path / "bad", sizes={"2007_000001": (10, 8)})
    with pytest.raises(ValueError, match="2007_000001.png is 10x8 but its image is 20x16"):
        load_voc_folder(bad, "cat")
    (root / "JPEGImages" / "2007_000005.jpg").unlink()
    with pytest.raises(ValueError, match="2007_000005"):
        load_voc_folder(root, "cat")
    empty = _voc(tmp_path / "empty")
    (empty / "ImageSets/Segmentation/train.txt").write_text("\n")
    with pytest.raises(ValueError, match="no images listed"):
        load_voc_folder(empty, "cat")


def test_image_folder_negatives_can_be_chosen(tmp_path):
    """'cat vs random images': only the named folders become negatives; the other classes stay out."""
    root = _image_folder(tmp_path / "imgs", {"cat": 10, "dog": 8, "random": 12})
    d = load_image_folder(root, "cat", size=16, seed=0, negatives=["random"])
    green = {round((img[1, 0, 0].item() * 255 - 30) / 60) for s in (d.train, d.test) for img in s.images}
    assert green == {0, 2}  # cat (class 0) and random (class 2), never dog (class 1)
    for bad in (["bird"], ["cat"], []):
        with pytest.raises(ValueError, match="negatives must name other class folders"):
            load_image_folder(root, "cat", size=16, seed=0, negatives=bad)
