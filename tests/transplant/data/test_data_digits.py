"""Digits data: binary category sets as in the paper, fixed train/test cut per seed."""
import pytest
import torch

from transplant.data import CategoryDataset, Split, feature_norm_images, load_digits_category, load_digits_multiclass


def _rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


def test_shapes_and_ranges():
    d = load_digits_category(3, size=32)
    assert isinstance(d, CategoryDataset) and d.dataset == "digits" and d.category == "3"
    assert d.train.images.shape[1:] == (1, 32, 32) and d.train.images.dtype == torch.float32
    assert d.train.labels.dtype == torch.int64 and d.train.masks is None
    assert 0.0 <= d.train.images.min() and d.train.images.max() <= 1.0
    assert d.train.images.max() > 0.9  # scaled from 0..16, not left as raw counts


def test_deterministic_in_seed():
    a, b, c = load_digits_category("5", seed=1), load_digits_category(5, seed=1), load_digits_category(5, seed=2)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.test.images, c.test.images)


def test_balanced_and_positives_are_the_digit():
    d = load_digits_category(7)
    for split in (d.train, d.test):
        assert int(split.labels.sum()) * 2 == len(split)
    # about 180 sevens, 30% held out
    assert 45 <= int(d.test.labels.sum()) <= 65


def test_train_test_disjoint_across_categories():
    # same seed: no image is in any category's train split and any category's test split
    train_rows = set().union(*(_rows(load_digits_category(c, seed=0).train.images) for c in (0, 3)))
    test_rows = set().union(*(_rows(load_digits_category(c, seed=0).test.images) for c in (3, 8)))
    multi_train, _ = load_digits_multiclass(seed=0)
    assert not train_rows & test_rows
    assert not _rows(multi_train.images) & test_rows


def test_multiclass_labels():
    train, test = load_digits_multiclass(size=16, seed=0)
    assert train.images.shape[1:] == (1, 16, 16)
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert len(train) + len(test) == 1797


def test_unknown_category():
    with pytest.raises(ValueError, match="unknown digits category"):
        load_digits_category(10)
    with pytest.raises(ValueError, match="unknown digits category"):
        load_digits_category("cat")


def test_subset_balanced_deterministic_nested():
    train = load_digits_category(9).train
    s10, s10b, s20 = train.subset(10, seed=4), train.subset(10, seed=4), train.subset(20, seed=4)
    assert int(s10.labels.sum()) == 5 and len(s10) == 10
    assert torch.equal(s10.images, s10b.images)
    assert _rows(s10.images) <= _rows(s20.images)  # few-shot sweeps only add samples
    assert not torch.equal(train.subset(10, seed=5).images, s10.images)
    assert len(train.subset(10_000, seed=0)) == len(train)


def test_subset_short_class_gives_its_share_to_others():
    split = Split(torch.rand(12, 1, 4, 4), torch.tensor([1, 1] + [0] * 10))
    sub = split.subset(8, seed=0)
    assert int(sub.labels.sum()) == 2 and len(sub) == 8


def test_feature_norm_images_fixed_sample():
    test = load_digits_category(1).test
    a, b = feature_norm_images(test, n=16), feature_norm_images(test, n=16)
    assert a.shape == (16, 1, 32, 32) and torch.equal(a, b)
    assert len(feature_norm_images(test, n=10_000)) == len(test)
