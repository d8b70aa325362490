"""jacobian (Srinivas & Fleuret 2018): match real input gradients of student and teacher.

Real gradients pass ReLUs and max-pools by the current feature maps: the paper's point is that a
frozen g_S blocks most of them. Jacobians are normalised per sample, as Srinivas & Fleuret do.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register
from transplant.tasks import get_task


def _normalised(grad: torch.Tensor) -> torch.Tensor:
    return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


@register
class Jacobian(Method):
    name = "jacobian"
    needs_samples = True
    weight = 1.0

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        idx = self.sample_batch()
        features = self.labelled()[1]
        x = features[idx].clone().requires_grad_(True)
        student = self.problem.student_task(adapter(x))
        G = self._draw_g(student)
        d_student, = torch.autograd.grad((student * G).sum(), x, create_graph=True)
        x_t = features[idx].clone().requires_grad_(True)
        teacher = self.problem.teacher_task(x_t)
        d_teacher, = torch.autograd.grad((teacher * G).sum(), x_t)
        jac = self.weight * ((_normalised(d_student) - _normalised(d_teacher)) ** 2).flatten(1).sum(1).mean()
        task, _ = self.task_loss(adapter, idx)
        return task + jac, {"task_loss": float(task.detach()), "distill_loss": float(jac.detach())}

    def _draw_g(self, output: torch.Tensor) -> torch.Tensor:
        if not get_task(self.problem.task).dense_output:  # one logit: G = 1
            return torch.ones_like(output)
        return (torch.rand(output.shape, generator=self.generator) * 2 - 1).to(output.device)
