"""The task registry: one registration per task type, looked up wherever a task's rules differ."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from transplant.methods import DistillSettings
from transplant.methods.distill import soft_cross_entropy
from transplant.metrics import evaluate
from transplant.spec.schema import SpecError, check_output, default_output
from transplant.tasks import (CLASSIFICATION, SEGMENTATION, TASK_TYPES, Metric, OutputMeaning, TaskType, get_task,
                              lower_is_better, register, task_names)
from transplant.teacher import joint_loss, task_loss


def test_the_two_task_types_keep_their_rules() -> None:
    cls, seg = get_task(CLASSIFICATION), get_task(SEGMENTATION)
    assert task_names()[:2] == [CLASSIFICATION, SEGMENTATION]
    assert cls.primary_metric({"error_rate": 3.0}) == "error_rate"
    assert seg.primary_metric({"iou": 50.0, "pixel_accuracy": 90.0}) == "iou"
    assert seg.primary_metric({"pixel_accuracy": 90.0}) == "pixel_accuracy"  # a site that reports no IoU
    assert cls.headline.name == "error_rate" and seg.headline.name == "pixel_accuracy"
    assert lower_is_better("error_rate") and not lower_is_better("iou") and not lower_is_better("pixel_accuracy")
    assert DistillSettings().mode_for(CLASSIFICATION) == "ones_masked"
    assert DistillSettings().mode_for(CLASSIFICATION, cross_network=True) == "enlarged"
    assert DistillSettings().mode_for(SEGMENTATION, cross_network=True) == "uniform"
    assert (cls.lambda_scale, seg.lambda_scale) == (10.0, 1.0)
    labels = torch.tensor([1, 0, 1])
    assert cls.keep(labels) is None and seg.keep(labels).tolist() == [True, False, True]


def test_unknown_and_duplicate_task_types_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown task 'detection'.*classification"):
        get_task("detection")
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(get_task(CLASSIFICATION)))
    with pytest.raises(ValueError, match="needs at least one metric"):
        register(dataclasses.replace(get_task(CLASSIFICATION), name="empty", metrics=()))
    assert "empty" not in TASK_TYPES


def test_segmentation_loss_without_masks_names_the_reason() -> None:
    with pytest.raises(TypeError, match="needs masks"):
        task_loss(SEGMENTATION, torch.zeros(2, 2, 4, 4), torch.ones(2), None)


def _regression_task() -> TaskType:
    """A made-up task type: one score, squared error, scored by mean absolute error."""
    return TaskType(
        name="toy_regression",
        loss=lambda out, labels, masks: ((out.reshape(-1) - labels.float()) ** 2).mean(),
        soft_loss=lambda student, teacher: ((student - teacher) ** 2).mean(),
        score=lambda out, labels, masks: {"mae": float((out.reshape(-1) - labels.float()).abs().mean())},
        errors=lambda out, labels, masks: float((out.reshape(-1) - labels.float()).abs().mean()),
        metrics=(Metric("mae", "mean absolute error", lower_is_better=True),), primary=("mae",),
        output=OutputMeaning(frozenset({"unit"}), lambda shape, category: {"kind": "toy_regression", "classes": [category],
                                                                            "unit": "1"},
                             lambda meaning, shape: None if tuple(shape) == (1,) else "one score only",
                             lambda out, meaning, category: {"score": float(out.reshape(-1)[0])}),
        positives_only=True, g_mode_same_net="uniform", g_mode_cross_net="uniform", lambda_scale=3.0)


@pytest.fixture
def regression() -> Iterator[TaskType]:
    task = register(_regression_task())
    try:
        yield task
    finally:
        del TASK_TYPES[task.name]


def test_a_new_task_type_is_one_registration(regression: TaskType) -> None:
    """Loss, metrics, evaluation filter, G mode, soft loss and output meaning all follow the registration."""
    from coordinator.promotion import better, primary_metric

    head = torch.nn.Linear(4, 1)
    features, labels = torch.randn(6, 4), torch.tensor([1, 0, 1, 1, 0, 1])
    assert evaluate(head, "toy_regression", features, labels) == {
        "mae": pytest.approx(float((head(features).reshape(-1) - labels.float()).abs().mean().detach()))}
    kept = labels == 1  # positives_only: the joint loss reads the positives only
    expected = ((head(features[kept]).reshape(-1) - 1.0) ** 2).mean()
    loss = joint_loss(features, {"toy_regression": head}, labels, None, 1.0)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    assert DistillSettings().mode_for("toy_regression") == "uniform"
    assert float(soft_cross_entropy(torch.ones(3), torch.zeros(3), "toy_regression")) == pytest.approx(1.0)
    assert primary_metric("toy_regression", {"mae": 1.0, "teacher_mae": 0.5}) == "mae"
    assert better("mae", 0.2, 0.5)  # lower is better, as the registration says
    meaning = {"kind": "toy_regression", "classes": ["cat"], "unit": "kg"}
    assert check_output(meaning, (1,)) == meaning
    with pytest.raises(SpecError, match="one score only"):
        check_output(meaning, (2,))
    assert default_output((1,), "cat", kind="toy_regression")["unit"] == "1"


def test_the_registry_and_promotion_load_without_torch() -> None:
    """The admin CLI reads primary metrics through coordinator.promotion: that must not load torch."""
    code = "import sys, transplant.tasks, coordinator.promotion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
