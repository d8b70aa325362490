"""distill (Hinton et al.): task loss + cross-entropy between student and teacher outputs."""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register
from transplant.tasks import get_task


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, task: str) -> torch.Tensor:
    """The task type's cross-entropy against the teacher's outputs (one logit: Bernoulli)."""
    return get_task(task).soft_loss(student, teacher)


@register
class Distill(Method):
    name = "distill"
    needs_samples = True

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        idx = self.sample_batch()
        task, output = self.task_loss(adapter, idx)
        with torch.no_grad():
            target = self.problem.teacher_task(self.labelled()[1][idx])
        distill = soft_cross_entropy(output, target, self.problem.task)
        return task + distill, {"task_loss": float(task.detach()), "distill_loss": float(distill.detach())}
