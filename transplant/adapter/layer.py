"""The adapter h and its pseudo-backward h' (through which back-distillation learns it)."""
from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from transplant.adapter.config import AdapterConfig


class Adapter(nn.Module):
    """reorder -> rescale(beta) -> n x [conv + ReLU]; only the convs are learned."""

    permutation: torch.Tensor  # buffers, registered in __init__
    inverse: torch.Tensor

    def __init__(self, config: AdapterConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        m, k = config.channels, config.kernel_size
        self.convs = nn.ModuleList(nn.Conv2d(m, m, k, padding=k // 2) for _ in range(config.layers))
        perm = torch.tensor(config.permutation if config.permutation is not None else range(m))
        self.register_buffer("permutation", perm, persistent=False)
        self.register_buffer("inverse", torch.argsort(perm), persistent=False)
        self.reset_parameters(generator)

    @property
    def conv_layers(self) -> list[nn.Conv2d]:
        """`convs` as the nn.Conv2d (each with a bias) they are; an nn.ModuleList yields plain Modules."""
        return [cast(nn.Conv2d, conv) for conv in self.convs]

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal weights, zero biases; seeded so a job is reproducible."""
        for conv in self.conv_layers:
            fan_in = conv.weight[0].numel()
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                assert conv.bias is not None  # built with bias=True
                conv.bias.zero_()

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """reorder + rescale: fixed, no parameters."""
        return x[:, self.permutation] * self.config.beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x

    def pseudo_backward(self, g: torch.Tensor) -> torch.Tensor:
        """h'(g): ReLU' as identity (dummy_1st), conv' as transposed conv, then rescale and un-reorder.

        Differentiable in the conv weights: this is the "back-back-propagation" path.
        """
        k = self.config.kernel_size
        for conv in reversed(self.conv_layers):
            g = F.conv_transpose2d(g, conv.weight, padding=k // 2)
        g = g * self.config.beta
        return g[:, self.inverse]
