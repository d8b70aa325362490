"""The fast back-distillation path agrees with the double-backward reference (loss and gradients)."""
from __future__ import annotations

import pytest
import torch

from transplant.adapter import Adapter
from transplant.architectures import CLASSIFICATION, SEGMENTATION, teacher_specs, vgg_small
from transplant.job import JobConfig, make_problem
from transplant.methods import DistillSettings
from transplant.methods.back_distill import distill_term
from transplant.methods.draws import PseudoGradientPool
from transplant.methods.reference import naive_distill_loss
from transplant.spec import build_module


@pytest.mark.parametrize("task, mode", [(CLASSIFICATION, "ones_masked"), (CLASSIFICATION, "enlarged"),
                                        (SEGMENTATION, "uniform")])
@pytest.mark.parametrize("layers, kernel", [(1, 3), (3, 1)])
def test_fast_path_equals_double_backward(task, mode, layers, kernel):
    torch.manual_seed(0)
    specs = teacher_specs(vgg_small(width=4, depth=4, image_size=32, in_channels=3))
    teacher, student = build_module(specs.tasks[task]), build_module(specs.tasks[task])
    category = build_module(specs.category)
    config = JobConfig.create(task=task, adapter_layers=layers, kernel_size=kernel, reorder=True)
    problem = make_problem(config, category, teacher, student, beta=0.8)
    pool = PseudoGradientPool(teacher, student, task, DistillSettings(g_mode=mode, pool_size=4, p_ones=0.5),
                              torch.Generator().manual_seed(1))
    adapter = Adapter(problem.adapter_config, torch.Generator().manual_seed(2))

    fast = distill_term(adapter, pool, pool.student_grads, pool.teacher_grads)
    fast_grads = torch.autograd.grad(fast, list(adapter.parameters()), allow_unused=True)
    x_shape = (problem.adapter_config.channels, *pool.student_grads.shape[-2:])
    naive = naive_distill_loss(adapter, pool.student, pool.teacher, pool.G, pool.masks, pool.alpha, pool.lam, x_shape)
    naive_grads = torch.autograd.grad(naive, list(adapter.parameters()), allow_unused=True)

    assert torch.allclose(fast, naive, rtol=1e-4)
    for f, n in zip(fast_grads, naive_grads):
        if f is None:  # biases do not reach D'
            assert n is None or torch.count_nonzero(n) == 0
        else:
            assert torch.allclose(f, n, rtol=1e-3, atol=1e-6 * float(n.abs().max()))
