"""Procedural shapes: seeded, pixel-exact masks, and not solvable by colour thresholds."""
import numpy as np
import pytest
import torch

from transplant.data import CATEGORIES, DISSIMILAR, SIMILAR, load_shapes_category, load_shapes_multicategory, render
from transplant.data import shapes


def _best_threshold_iou(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Best IoU over global thresholds on R, G, B and grey, either polarity (tuned on the data itself)."""
    chans = torch.cat([images, images.mean(1, keepdim=True)], 1).permute(1, 0, 2, 3).flatten(1)
    m = masks.flatten().bool()
    best = 0.0
    for x in chans:
        pred = x[:, None] > torch.linspace(0, 1, 41)[None]
        for p in (pred, ~pred):
            inter = (p & m[:, None]).sum(0).float()
            union = (p | m[:, None]).sum(0).float()
            best = max(best, float((inter / union).max()))
    return best


def test_categories_and_groups():
    assert len(CATEGORIES) >= 8 and len(set(CATEGORIES)) == len(CATEGORIES)
    assert set(SIMILAR) | set(DISSIMILAR) == set(CATEGORIES) and not set(SIMILAR) & set(DISSIMILAR)
    assert {"cat", "cow", "dog", "horse", "sheep"} <= set(SIMILAR)


def test_render_types_determinism_and_coverage():
    for cat in CATEGORIES:
        x, m = render(cat, 24, seed=3)
        assert x.shape == (24, 3, 32, 32) and x.dtype == torch.float32
        assert m.shape == (24, 32, 32) and m.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1 and set(m.unique().tolist()) <= {0, 1}
        fg = m.float().mean((1, 2))
        assert fg.min() > 0.03 and 0.1 < fg.mean() < 0.4, cat  # objects cover roughly 15-35%
        x2, m2 = render(cat, 24, seed=3)
        assert torch.equal(x, x2) and torch.equal(m, m2)
    assert not torch.equal(render("cat", 4, seed=0)[0], render("cat", 4, seed=1)[0])
    assert render("dog", 2, seed=0, size=48)[1].shape == (2, 48, 48)


def test_masks_are_pixel_exact():
    # paint the object white and everything else (background, clutter, front occluders) black:
    # the bright pixels must be the mask exactly, occluded object pixels included
    white = lambda rng, n, x, y: np.ones((n, *x.shape, 3), np.float32)  # noqa: E731
    black = lambda rng, n, x, y: np.zeros((n, *x.shape, 3), np.float32)  # noqa: E731
    for cat in ("horse", "bicycle"):
        rng = np.random.default_rng(0)
        images, masks = shapes._render(cat, 32, rng, 32, paint_object=white, paint_other=black)
        assert np.array_equal(images.mean(1) > 0.5, masks)


def test_category_dataset_labels_masks_balance():
    d = load_shapes_category("cat", n_train=60, n_test=41, seed=0)
    assert d.dataset == "shapes" and d.category == "cat"
    assert len(d.test) == 40 and int(d.test.labels.sum()) == 20  # balanced
    assert int(d.train.labels.sum()) == 30
    for split in (d.train, d.test):
        area = split.masks.flatten(1).sum(1)
        assert bool((area[split.labels == 1] > 0).all())
        assert bool((area[split.labels == 0] == 0).all())  # negatives show other categories


def test_category_dataset_deterministic_and_disjoint():
    a = load_shapes_category("dog", n_train=40, n_test=20, seed=5)
    b = load_shapes_category("dog", n_train=40, n_test=20, seed=5)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.masks, b.test.masks)
    train = {img.numpy().tobytes() for img in a.train.images}
    assert not any(img.numpy().tobytes() in train for img in a.test.images)
    c = load_shapes_category("dog", n_train=40, n_test=20, seed=6)
    assert not torch.equal(a.test.images, c.test.images)


def test_negatives_restricted():
    d = load_shapes_category("horse", n_train=20, n_test=20, negatives=["cow"])
    assert len(d.train) == 20
    with pytest.raises(ValueError, match="at least one category"):
        load_shapes_category("horse", negatives=["horse"])


def test_threshold_baseline_does_poorly():
    x, m = render("sheep", 150, seed=11)
    assert _best_threshold_iou(x, m) < 0.4


def test_multicategory():
    cats = ["cow", "dog", "aeroplane"]
    s = load_shapes_multicategory(cats, n_per_category=10, seed=0)
    assert len(s) == 30 and torch.bincount(s.labels).tolist() == [10, 10, 10]
    assert bool((s.masks.flatten(1).sum(1) > 0).all())
    assert torch.equal(s.images, load_shapes_multicategory(cats, 10, seed=0).images)


def test_unknown_category():
    with pytest.raises(ValueError, match="unknown shapes category"):
        render("unicorn", 1, seed=0)


def test_default_negatives_are_random_images_not_other_mammals():
    """The paper's classifiers are "a category vs random images": no other similar category as a negative."""
    from transplant.data import BACKGROUND, HARD_NEGATIVES, RANDOM_NEGATIVES, SIMILAR, load_shapes_category

    assert BACKGROUND in RANDOM_NEGATIVES and not set(SIMILAR) & set(RANDOM_NEGATIVES)
    assert set(SIMILAR) <= set(HARD_NEGATIVES)
    only_background = load_shapes_category("cat", n_train=40, n_test=10, negatives=(BACKGROUND,))
    negatives = only_background.train.labels == 0
    assert negatives.any() and only_background.train.masks[negatives].sum() == 0
    default = load_shapes_category("cat", n_train=40, n_test=10)
    explicit = load_shapes_category("cat", n_train=40, n_test=10, negatives=RANDOM_NEGATIVES)
    assert torch.equal(default.train.images, explicit.train.images)
    hard = load_shapes_category("cat", n_train=40, n_test=10, negatives=HARD_NEGATIVES)
    assert not torch.equal(default.train.images, hard.train.images)
    with pytest.raises(ValueError, match="background"):
        load_shapes_category("cat", n_train=40, n_test=10, negatives=("unicorn",))
    with pytest.raises(ValueError):
        load_shapes_category(BACKGROUND, n_train=40, n_test=10)  # not a category of its own
