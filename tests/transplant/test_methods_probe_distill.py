"""probe_distill: the teacher's answers distilled through the generic task module on probe images only."""
from __future__ import annotations

import copy

import torch

from transplant.adapter import Adapter
from transplant.architectures import CLASSIFICATION
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import METHODS, auto_candidates
from transplant.methods.probe_distill import PROBES
from transplant.probes import probes_for
from transplant.spec.schema import preprocess_of
from transplant.trainer import evaluate_adapter


def _strict_head(net, data):
    """The teacher's own classifier with its threshold raised to the median logit of its category: a generic
    task module that, fed the right features, still says "no" to half of the new category's images."""
    task = net.task_module(CLASSIFICATION)
    strict = copy.deepcopy(task)
    last = [m for m in strict.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    with torch.no_grad():
        logits = task(net.category(data.test.images)).reshape(-1)
        last.bias -= logits[data.test.labels == 1].median()
    return task, strict


def _run(method, net, teacher_task, student):
    config = JobConfig.create(task=CLASSIFICATION, method=method, adapter_layers=1, reorder=True, steps=200)
    problem = make_problem(config, net.category, teacher_task, student, beta=1.0, generic_category_module=net.category)
    return problem, run_job(config, problem)


def test_probe_distill_teaches_a_stricter_generic_module_the_teachers_answers(digits_teacher):
    net, data, teacher_error = digits_teacher
    teacher_task, strict = _strict_head(net, data)
    errors = {}
    for method in ("weight_match", "probe_distill"):
        problem, result = _run(method, net, teacher_task, strict)
        errors[method] = evaluate_adapter(problem, result.adapter, data.test.images, data.test.labels)["error_rate"]
    # stitching reproduces f's features exactly and inherits the strict threshold (about a quarter wrong);
    # distillation moves the features until the strict module agrees with the teacher, without any image of a site
    assert errors["weight_match"] >= 20
    assert errors["probe_distill"] <= min(errors["weight_match"] - 10, teacher_error + 10)


def test_inversion_turns_probes_into_images_of_the_teachers_category(digits_teacher):
    net, _, _ = digits_teacher
    teacher_task = net.task_module(CLASSIFICATION)
    config = JobConfig.create(task=CLASSIFICATION, method="probe_distill", adapter_layers=1, reorder=True, steps=1)
    problem = make_problem(config, net.category, teacher_task, teacher_task, beta=1.0,
                           generic_category_module=net.category)
    method = METHODS["probe_distill"](problem, config.train, torch.Generator().manual_seed(0))
    probes = probes_for(net.category.spec, 64)
    inverted = method._invert(probes)
    with torch.no_grad():
        yes_before = float((teacher_task(net.category(probes)) > 0).float().mean())
        yes_after = float((teacher_task(net.category(inverted)) > 0).float().mean())
    assert yes_before <= 0.2 and yes_after >= 0.8
    prep = preprocess_of(net.category.spec)  # pixels stay inside the range the site's normalisation gives
    low, high = (0 - prep["mean"][0]) / prep["std"][0], (1 - prep["mean"][0]) / prep["std"][0]
    assert inverted.shape == probes.shape and float(inverted.min()) >= low - 1e-6 and float(inverted.max()) <= high + 1e-6
    method.warm_start(Adapter(problem.adapter_config))
    assert method.start == "weight_match" and len(method.inputs) == len(method.targets) == 2 * PROBES


def test_probe_distill_is_a_data_free_auto_candidate():
    assert "probe_distill" in auto_candidates(0) and "probe_distill" in auto_candidates(20)
    assert not METHODS["probe_distill"].needs_samples and not METHODS["probe_distill"].uses_samples


def test_segmentation_teachers_are_asked_to_see_an_object_and_their_answers_distilled():
    from transplant.architectures import SEGMENTATION, teacher_specs, vgg_small
    from transplant.methods.probe_distill import _blob_masks
    from transplant.teacher import TeacherNet

    torch.manual_seed(0)
    net = TeacherNet(teacher_specs(vgg_small(width=4, depth=3, image_size=16, fc=16), (SEGMENTATION,)))
    seg = net.task_module(SEGMENTATION)
    config = JobConfig.create(task=SEGMENTATION, method="probe_distill", adapter_layers=1, reorder=True, steps=30)
    problem = make_problem(config, net.category, seg, seg, beta=1.0, generic_category_module=net.category)
    method = METHODS["probe_distill"](problem, config.train, torch.Generator().manual_seed(0))
    probes = probes_for(net.category.spec, 32)
    masks = _blob_masks(32, 16, 16, torch.Generator().manual_seed(0))
    inverted = method._invert(probes)  # the method's generator is seeded alike: the same ellipses
    with torch.no_grad():
        def agreement(x):
            return float((seg(net.category(x)).argmax(1) == masks).float().mean())
        assert agreement(inverted) > agreement(probes) + 0.2
    result = run_job(config, problem)
    losses = [h["loss"] for h in result.history]
    assert result.steps == 30 and min(losses) >= -1e-6  # a KL: never below 0
