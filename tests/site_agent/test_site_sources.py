"""Data sources that say what they do: a VOC-layout tree (JPEGImages, palette PNGs in SegmentationClass,
ImageSets/Segmentation) read as 'category vs negatives', with the negatives chosen by --negatives."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from site_agent.data import load_source
from site_agent.errors import SiteAgentError
from tests.helpers.site_nets import write_voc

CAT, DOG, COW = 8, 12, 10


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc") / "VOC2012",
                     {"train": [CAT, CAT, CAT, DOG, DOG, COW, COW, COW], "val": [CAT, CAT, DOG, COW, COW]})


def _shows(root, split: str) -> list[set[int]]:
    names = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    return [set(np.unique(np.asarray(Image.open(root / "SegmentationClass" / f"{n}.png")))) for n in names]


def test_voc_tree_is_read_with_palette_masks(voc):
    assert Image.open(next((voc / "SegmentationClass").iterdir())).mode == "P"  # VOC's own format
    data = load_source(f"voc:{voc}:cat", size=32)
    assert data.category == "cat" and data.train.masks is not None
    assert set(data.train.masks.unique().tolist()) == {0, 1}  # the 255 borders count as background
    positives = data.train.labels == 1
    assert int(positives.sum()) == 3 and bool((data.train.masks[positives].flatten(1).sum(1) > 0).all())
    assert int(data.test.labels.sum()) * 2 == len(data.test)  # balanced held-out split


def test_voc_negatives_are_chosen(voc):
    default = load_source(f"voc:{voc}:cat", size=32, seed=0)
    chosen = load_source(f"voc:{voc}:cat", size=32, seed=0, negatives=("dog",))
    shown = [c for c in _shows(voc, "train") if CAT not in c]
    assert int((default.train.labels == 0).sum()) == min(3, len(shown))  # any image without a cat
    assert int((chosen.train.labels == 0).sum()) == 2  # the two dog images only, the cows stay out
    for bad in (("cat",), ("unicorn",)):
        with pytest.raises(SiteAgentError, match="negatives must name VOC classes|unknown VOC category"):
            load_source(f"voc:{voc}:cat", size=32, negatives=bad)
