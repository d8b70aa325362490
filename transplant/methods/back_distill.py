"""Back-distillation: task loss (if any samples) + lambda * ||alpha D'_S - D'_T||^2 (paper Eqn. 3)."""
from __future__ import annotations

import dataclasses

import torch
from torch.nn import functional as F

from transplant.adapter import Adapter
from transplant.methods.base import Method, TrainConfig, TransplantProblem, register
from transplant.methods.draws import PseudoGradientPool


def distill_term(adapter: Adapter, pool: PseudoGradientPool, student_grads: torch.Tensor,
                 teacher_grads: torch.Tensor) -> torch.Tensor:
    """lambda * ||alpha h'(B_S(G)) - B_T(G)||^2, the squared norm summed over D's elements as in the
    paper (Eqn. 3), averaged over draws. `DistillSettings.lambda_scale` rescales lambda."""
    student = adapter.pseudo_backward(student_grads)
    return pool.lam * ((pool.alpha * student - teacher_grads) ** 2).flatten(1).sum(1).mean()


@torch.no_grad()
def solve_one_layer(adapter: Adapter, pool: PseudoGradientPool, ridge: float = 1e-6, chunk: int = 64) -> None:
    """Closed-form minimiser of sum ||alpha h'(B_S(G)) - B_T(G)||^2 over the 1-layer adapter's weights.

    h'(u) = beta * convT(u, W) un-reordered. A stride-1 transposed conv is a conv with the kernel
    transposed and flipped, W' = W^T flipped, so h'(u)[perm[j]] = beta * (W'_flat @ unfold(u))[j]:
    ordinary linear least squares with one Gram matrix shared by all output channels.
    """
    config = adapter.config
    conv = adapter.conv_layers[0]
    k, m = config.kernel_size, config.channels
    scale = pool.alpha * config.beta
    perm = adapter.permutation
    device = conv.weight.device
    gram = torch.zeros(m * k * k, m * k * k, dtype=torch.float64, device=device)
    cross = torch.zeros(m, m * k * k, dtype=torch.float64, device=device)
    for start in range(0, len(pool.G), chunk):
        u = pool.student_grads[start:start + chunk].double()
        cols = F.unfold(u, k, padding=k - 1 - k // 2)              # [N, M k k, L]
        target = pool.teacher_grads[start:start + chunk].double()[:, perm].flatten(2)  # [N, M, L]
        gram += torch.einsum("nal,nbl->ab", cols, cols)
        cross += torch.einsum("njl,nal->ja", target, cols)
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=torch.float64, device=device)
    w_prime = torch.linalg.solve(gram, cross.T).T / scale       # [M, M k k]
    w_prime = w_prime.reshape(m, m, k, k)
    conv.weight.copy_(w_prime.flip(2, 3).transpose(0, 1).float())
    assert conv.bias is not None  # adapter convs have biases
    conv.bias.zero_()


@register
class BackDistill(Method):
    name = "back_distill"
    auto_candidate = True
    relative_cost = 2.0

    def __init__(self, problem: TransplantProblem, config: TrainConfig, generator: torch.Generator):
        super().__init__(problem, config, generator)
        settings = config.distill
        if not self.iterative:
            settings = dataclasses.replace(settings, pool_size=settings.lstsq_draws)
        self.pool = PseudoGradientPool(problem.teacher_task, problem.student_task, problem.task, settings, generator,
                                       problem.same_net)

    @property
    def iterative(self) -> bool:
        """Data-free with a 1-layer adapter, D'_S is linear in the weights: solve it in one shot."""
        solver = self.config.solver
        if solver not in ("auto", "iterative", "lstsq"):
            raise ValueError(f"unknown solver '{solver}'")
        linear = self.features is None and self.problem.adapter_config.layers == 1
        if solver == "lstsq" and not linear:
            raise ValueError("the one-shot solver needs a 1-layer adapter and zero samples")
        return solver == "iterative" or not linear

    def solve(self, adapter: Adapter) -> None:
        solve_one_layer(adapter, self.pool)

    def warm_start(self, adapter: Adapter) -> None:
        """With samples and a 1-layer adapter, Adam starts from the distillation term's exact minimiser
        (solver "auto"); the task loss then only has to correct it. "iterative" starts at random."""
        if self.config.solver == "auto" and self.problem.adapter_config.layers == 1:
            solve_one_layer(adapter, self.pool)

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        student_grads, teacher_grads = self.pool.batch(self.config.distill.draws_per_step, self.generator)
        distill = distill_term(adapter, self.pool, student_grads, teacher_grads)
        parts = {"distill_loss": float(distill.detach())}
        if self.features is None:
            return distill, parts
        task, _ = self.task_loss(adapter, self.sample_batch())
        parts["task_loss"] = float(task.detach())
        return task + distill, parts
