"""Exp.1 in miniature: an adapter with a random channel reorder inserted into the same teacher,
learned by back-distillation from ZERO samples, recovers the teacher's error (paper Table 2)."""
from __future__ import annotations

import pytest

from transplant.architectures import CLASSIFICATION
from transplant.job import JobConfig, make_problem, run_job
from transplant.trainer import evaluate_adapter

pytestmark = pytest.mark.slow


def test_one_conv_adapter_from_zero_samples_is_within_two_points_of_the_teacher(digits_teacher):
    net, data, teacher_error = digits_teacher
    task = net.task_module(CLASSIFICATION)
    config = JobConfig(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True, steps=600, seed=0)
    problem = make_problem(config, net.category, task, task, beta=1.0)
    assert problem.adapter_config.permutation != tuple(range(16))
    result = run_job(config, problem)
    student = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    assert abs(result.alpha - 1.0) < 1e-6  # the same task module on both sides
    assert student <= teacher_error + 2.0, (student, teacher_error)


def test_untrained_adapter_is_near_chance(digits_teacher):
    """Guards the test above: without learning, the reordered features do not work."""
    net, data, teacher_error = digits_teacher
    task = net.task_module(CLASSIFICATION)
    config = JobConfig(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True, steps=1, lr=1e-9)
    problem = make_problem(config, net.category, task, task, beta=1.0)
    result = run_job(config, problem)
    student = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    assert student > teacher_error + 10
