"""Closed-form adapters shared by the stitching methods: a 1x1 map in the first conv, identity after.

All of them write the first conv's centre tap (a 3x3 adapter then acts as a 1x1 one) and make
every deeper conv the identity, which after a ReLU passes its (non-negative) input unchanged.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from transplant.adapter import Adapter

if TYPE_CHECKING:
    from transplant.methods.base import Method

RIDGE = 1e-3
DATA_FREE_STARTS = ("weight_match", "probe_stitch", "identity")  # where hybrid and probe_distill begin


@torch.no_grad()
def set_channel_map(adapter: Adapter, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """First conv := the [M, M] map `weight` (+ bias) on the reordered, rescaled input; deeper convs identity."""
    convs = adapter.conv_layers
    first = convs[0]
    k = first.kernel_size[0]
    first.weight.zero_()
    first.weight[:, :, k // 2, k // 2] = weight.to(first.weight)
    assert first.bias is not None  # adapter convs have biases
    first.bias.copy_(bias if bias is not None else torch.zeros(len(first.bias)))
    eye = torch.eye(adapter.config.channels, device=first.weight.device)
    for conv in convs[1:]:
        conv.weight.zero_()
        conv.weight[:, :, k // 2, k // 2] = eye
        assert conv.bias is not None
        conv.bias.zero_()


@torch.no_grad()
def fit_stitch(adapter: Adapter, source: torch.Tensor, target: torch.Tensor, ridge: float = RIDGE) -> float:
    """Ridge least squares h(source) ~ target per pixel, source being f's features [N, M, H, W]
    (reordered and rescaled here) and target f_S's features of the same images. Returns the
    relative residual ||A W - B|| / ||B|| of the linear fit (before the ReLU)."""
    source = adapter.pre(source)
    if target.shape != source.shape:
        raise ValueError(f"category modules disagree: {list(source.shape)} vs {list(target.shape)}")
    a = source.permute(0, 2, 3, 1).reshape(-1, source.shape[1]).double()
    b = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    a1 = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
    gram = a1.T @ a1
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=a.dtype, device=a.device)
    solution = torch.linalg.solve(gram, a1.T @ b)                 # [M + 1, M]
    set_channel_map(adapter, solution[:-1].T.float(), solution[-1].float())
    return float((a1 @ solution - b).norm() / b.norm().clamp_min(1e-12))


@torch.no_grad()
def effective_map(adapter: Adapter) -> torch.Tensor:
    """The adapter's channel map as one [M, M] matrix on the reordered input: the product of the
    convs' summed taps (ReLUs and biases ignored), used to read off which input each output follows."""
    total = torch.eye(adapter.config.channels)
    for conv in adapter.conv_layers:
        total = conv.weight.detach().cpu().sum((2, 3)) @ total
    return total


def permutation_recovery(adapter: Adapter) -> float | None:
    """Fraction of output channels whose strongest input is the one the reorder moved there
    (exact recovery: 1.0). None without a reorder. Inside one net the reorder is the whole truth;
    across nets it assumes the two nets' channels correspond (a shared pre-trained start)."""
    perm = adapter.config.permutation
    if perm is None:
        return None
    inverse = torch.argsort(torch.tensor(perm))
    found = effective_map(adapter).abs().argmax(1)
    return float((found == inverse).float().mean())


def best_data_free_start(method: "Method", adapter: Adapter,
                          score: Callable[[Adapter], Any]) -> tuple[str | None, dict[str, Any]]:
    """Solve each data-free closed-form start that applies to `method`'s problem and load the one with the
    lowest `score` into `adapter` (left as it is when none applies): (its name or None, every start's score)."""
    from transplant.methods.base import METHODS

    best, scores = None, {}
    problem = method.problem
    for name in DATA_FREE_STARTS:
        cls = METHODS[name]
        if cls.needs_generic_category_module and problem.generic_category_module is None:
            continue
        trial = copy.deepcopy(adapter)
        try:
            cls(problem, method.config, method.generator).solve(trial)
        except ValueError:  # e.g. weight_match across different architectures
            continue
        scores[name] = score(trial.eval())
        if best is None or scores[name] < scores[best[0]]:
            best = (name, trial)
    if best is None:
        return None, scores
    adapter.load_state_dict(best[1].state_dict())
    return best[0], scores
