"""Least-squares feature stitching: fit the adapter's first conv (as a 1x1 map) so that
h(f(I)) ~ f_S(I) on the sample images, in closed form; deeper layers start as identity.

It needs images of the new category and the generic net's own category module f_S.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register

RIDGE = 1e-3


@register
class LstsqStitch(Method):
    name = "lstsq"
    needs_samples = True

    @property
    def iterative(self) -> bool:
        return False

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError("lstsq is solved in closed form; call solve()")

    @torch.no_grad()
    def solve(self, adapter: Adapter) -> None:
        if self.problem.generic_category_module is None:
            raise ValueError("lstsq stitching needs the generic net's category module")
        source = adapter.pre(self.features)                       # [N, M, H, W], reordered and rescaled
        target = self.problem.generic_category_module(self.problem.samples.images)
        if target.shape != source.shape:
            raise ValueError(f"category modules disagree: {list(source.shape)} vs {list(target.shape)}")
        a = source.permute(0, 2, 3, 1).reshape(-1, source.shape[1])
        b = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1])
        a1 = torch.cat([a, torch.ones(len(a), 1, device=a.device)], 1)
        gram = a1.T @ a1 + RIDGE * len(a1) * torch.eye(a1.shape[1], device=a.device)
        solution = torch.linalg.solve(gram, a1.T @ b)             # [M + 1, M]
        first = adapter.convs[0]
        k = first.kernel_size[0]
        first.weight.zero_()
        first.weight[:, :, k // 2, k // 2] = solution[:-1].T
        first.bias.copy_(solution[-1])
        for conv in adapter.convs[1:]:                            # identity: the ReLU input is already >= 0
            conv.weight.zero_()
            conv.bias.zero_()
            for c in range(conv.weight.shape[0]):
                conv.weight[c, c, k // 2, k // 2] = 1.0
