"""distill (Hinton et al.): task loss + cross-entropy between student and teacher outputs."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from transplant.adapter import Adapter
from transplant.methods.base import Method, register


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, task: str) -> torch.Tensor:
    if task == "classification":  # one logit: Bernoulli cross-entropy against the teacher's probability
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    return -(F.softmax(teacher, dim=1) * F.log_softmax(student, dim=1)).sum(1).mean()


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
