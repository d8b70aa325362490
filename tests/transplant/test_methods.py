"""Every method behind one interface: selected by name, deterministic, learns only the adapter."""
from __future__ import annotations

import pytest
import torch

from transplant.adapter import adapter_weights
from transplant.architectures import CLASSIFICATION
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import METHODS, Samples, get_method
from transplant.trainer import evaluate_adapter

from tests.helpers.modules import state_hash


def problem_for(net, data, config, samples=0):
    task = net.task_module(CLASSIFICATION)
    chosen = data.train.subset(samples, seed=0) if samples else None
    sample_set = Samples(chosen.images, chosen.labels) if chosen else None
    return make_problem(config, net.category, task, task, beta=1.0, samples=sample_set,
                        generic_category_module=net.category)


def test_registry_knows_every_method():
    assert set(METHODS) == {"back_distill", "direct_learn", "distill", "jacobian", "lstsq", "probe_stitch",
                            "weight_match", "hybrid", "identity", "probe_distill"}
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        get_method("magic")


@pytest.mark.parametrize("method", ["direct_learn", "distill", "jacobian", "lstsq"])
def test_methods_that_need_labels_refuse_zero_samples(method, digits_teacher):
    net, data, _ = digits_teacher
    config = JobConfig.create(task=CLASSIFICATION, method=method, steps=5)
    with pytest.raises(ValueError, match="needs labelled samples"):
        run_job(config, problem_for(net, data, config))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_trains_only_the_adapter_and_is_deterministic(method, digits_teacher):
    net, data, _ = digits_teacher
    frozen_before = state_hash(net)
    config = JobConfig.create(task=CLASSIFICATION, method=method, adapter_layers=1, kernel_size=3, reorder=True,
                       steps=40, seed=3)
    first = run_job(config, problem_for(net, data, config, samples=20))
    second = run_job(config, problem_for(net, data, config, samples=20))
    a, b = adapter_weights(first.adapter), adapter_weights(second.adapter)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert state_hash(net) == frozen_before
    if first.steps:
        losses = [h["loss"] for h in first.history]
        # probe_distill starts from weight matching, which inside one net is already exact (KL ~ 0): nothing to learn
        assert losses[-1] < losses[0] or (method == "probe_distill" and losses[0] < 1e-3)


def test_lstsq_stitching_undoes_a_reorder_in_closed_form(digits_teacher):
    net, data, teacher_error = digits_teacher
    config = JobConfig.create(task=CLASSIFICATION, method="lstsq", adapter_layers=1, kernel_size=1, reorder=True)
    problem = problem_for(net, data, config, samples=20)
    result = run_job(config, problem)
    error = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    assert result.steps == 0 and error <= teacher_error + 2


def test_progress_callback_and_cancellation(digits_teacher):
    from transplant.trainer import Cancelled

    net, data, _ = digits_teacher
    config = JobConfig.create(task=CLASSIFICATION, steps=20, solver="iterative")
    seen = []
    run_job(config, problem_for(net, data, config), progress=lambda step, total, parts: seen.append((step, total)))
    assert seen[0] == (1, 20) and seen[-1] == (20, 20)
    with pytest.raises(Cancelled, match="stopped at step 6"):
        run_job(config, problem_for(net, data, config), should_stop=lambda: len(seen) > 24,
                progress=lambda *a: seen.append(a))
