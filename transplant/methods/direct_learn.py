"""direct-learn: the task loss on the few labelled samples, nothing else."""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register


@register
class DirectLearn(Method):
    name = "direct_learn"
    auto_candidate = True
    needs_samples = True

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        task, _ = self.task_loss(adapter, self.sample_batch())
        return task, {"task_loss": float(task.detach())}
