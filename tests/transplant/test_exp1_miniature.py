"""Exp.1 in miniature: an adapter with a random channel reorder inserted into the same teacher,
learned by back-distillation from ZERO samples, recovers the teacher's error (paper Table 2)."""
from __future__ import annotations

import pytest

from transplant.architectures import CLASSIFICATION
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import TrainConfig
from transplant.trainer import evaluate_adapter, train_adapter

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("solver", ["iterative", "lstsq"])
def test_one_conv_adapter_from_zero_samples_is_within_two_points_of_the_teacher(digits_teacher, solver):
    net, data, teacher_error = digits_teacher
    task = net.task_module(CLASSIFICATION)
    config = JobConfig.create(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True, steps=600, seed=0)
    problem = make_problem(config, net.category, task, task, beta=1.0)
    assert problem.adapter_config.permutation != tuple(range(16))
    result = train_adapter(problem, TrainConfig(steps=config.steps, seed=config.seed, solver=solver))
    assert (result.steps == 0) == (solver == "lstsq")
    student = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    assert abs(result.alpha - 1.0) < 1e-6  # the same task module on both sides
    assert student <= teacher_error + 2.0, (student, teacher_error)


def test_untrained_adapter_is_near_chance(digits_teacher):
    """Guards the test above: without learning, the reordered features do not work."""
    net, data, teacher_error = digits_teacher
    task = net.task_module(CLASSIFICATION)
    config = JobConfig.create(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True, steps=1, lr=1e-9)
    problem = make_problem(config, net.category, task, task, beta=1.0)
    result = train_adapter(problem, TrainConfig(steps=1, lr=1e-9, solver="iterative"))
    student = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    assert student > teacher_error + 10


def test_one_shot_solver_is_the_default_only_where_the_loss_is_linear(digits_teacher):
    net, data, _ = digits_teacher
    task = net.task_module(CLASSIFICATION)
    for layers, expected_steps in ((1, 0), (3, 5)):
        config = JobConfig.create(task=CLASSIFICATION, adapter_layers=layers, kernel_size=1, steps=5)
        assert run_job(config, make_problem(config, net.category, task, task, beta=1.0)).steps == expected_steps
    config = JobConfig.create(task=CLASSIFICATION, adapter_layers=3, kernel_size=1, steps=5)
    with pytest.raises(ValueError, match="one-shot solver needs"):
        train_adapter(make_problem(config, net.category, task, task, beta=1.0), TrainConfig(solver="lstsq"))
