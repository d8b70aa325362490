"""A small digits teacher, trained once per session by the same code a site agent uses."""
from __future__ import annotations

import pytest

from transplant.architectures import CLASSIFICATION, teacher_specs, vgg_small
from transplant.data.digits import load_digits_category
from transplant.teacher import TeacherTraining, evaluate_teacher, train_teacher

DIGITS_CONFIG = vgg_small(width=16, depth=4, image_size=16, in_channels=1)


@pytest.fixture(scope="session")
def digits_teacher():
    """(teacher net, dataset, teacher error rate) for digit 3 vs the rest."""
    data = load_digits_category(3, seed=0, size=16)
    net = train_teacher(teacher_specs(DIGITS_CONFIG, (CLASSIFICATION,)), data.train.images, data.train.labels,
                        config=TeacherTraining(epochs=20, seed=0))
    error = evaluate_teacher(net, data.test.images, data.test.labels)[CLASSIFICATION]["error_rate"]
    assert error < 10, f"the test teacher did not learn ({error:.1f}% error)"
    return net, data, error


@pytest.fixture(scope="session")
def second_digits_teacher():
    """Another category's teacher (digit 5): a generic task module for cross-network tests."""
    data = load_digits_category(5, seed=0, size=16)
    net = train_teacher(teacher_specs(DIGITS_CONFIG, (CLASSIFICATION,)), data.train.images, data.train.labels,
                        config=TeacherTraining(epochs=20, seed=1))
    return net, data

