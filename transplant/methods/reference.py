"""The straightforward back-distillation loss: a double backward through the linearised surrogate.

Kept as the reference the fast path (cached B(G) + the adapter's own pseudo-backward) must agree
with, and as the baseline of the speed benchmark. Not used for training.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.pseudograd import ReluMasks, linearised_surrogate
from transplant.spec.build import SpecModule


def linearised_adapter(adapter: Adapter, x: torch.Tensor) -> torch.Tensor:
    """The adapter with ReLU -> identity (dummy_1st): its VJP is h'."""
    x = adapter.pre(x)
    for conv in adapter.convs:
        x = conv(x)
    return x


def naive_distill_loss(adapter: Adapter, student_task: SpecModule, teacher_task: SpecModule, G: torch.Tensor,
                       masks: ReluMasks, alpha: float, lam: float, x_shape: tuple[int, ...]) -> torch.Tensor:
    """lambda * ||alpha D'_S - D'_T||^2 (summed over elements, mean over draws) with both D' taken by
    autograd (create_graph for the student)."""
    x = torch.zeros((len(G), *x_shape), requires_grad=True)  # any x: the surrogate is linear in it
    student_out = linearised_surrogate(student_task, masks)(linearised_adapter(adapter, x))
    d_student, = torch.autograd.grad(student_out, x, G, create_graph=True)
    x_teacher = torch.zeros((len(G), *x_shape), requires_grad=True)
    teacher_out = linearised_surrogate(teacher_task, masks)(x_teacher)
    d_teacher, = torch.autograd.grad(teacher_out, x_teacher, G)
    return lam * ((alpha * d_student - d_teacher) ** 2).flatten(1).sum(1).mean()
