"""Back-distillation: task loss (if any samples) + lambda * ||alpha D'_S - D'_T||^2 (paper Eqn. 3)."""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, TrainConfig, TransplantProblem, register
from transplant.methods.draws import PseudoGradientPool


def distill_term(adapter: Adapter, pool: PseudoGradientPool, student_grads: torch.Tensor,
                 teacher_grads: torch.Tensor) -> torch.Tensor:
    """lambda * mean over draws and elements of (alpha h'(B_S(G)) - B_T(G))^2.

    The squared norm is averaged over elements (not summed) so that lambda = 10 / E|D'_T|
    weighs it against the task loss the same way whatever the feature map's size.
    """
    student = adapter.pseudo_backward(student_grads)
    return pool.lam * ((pool.alpha * student - teacher_grads) ** 2).mean()


@register
class BackDistill(Method):
    name = "back_distill"

    def __init__(self, problem: TransplantProblem, config: TrainConfig, generator: torch.Generator):
        super().__init__(problem, config, generator)
        self.pool = PseudoGradientPool(problem.teacher_task, problem.student_task, problem.task,
                                       config.distill, generator)

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        student_grads, teacher_grads = self.pool.batch(self.config.distill.draws_per_step, self.generator)
        distill = distill_term(adapter, self.pool, student_grads, teacher_grads)
        parts = {"distill_loss": float(distill.detach())}
        if self.features is None:
            return distill, parts
        task, _ = self.task_loss(adapter, self.sample_batch())
        parts["task_loss"] = float(task.detach())
        return task + distill, parts
