"""Data-free weight matching: recover which channel of f is which channel of f_S from weights alone.

Two nets of one architecture that learned similar features differ by a permutation of each layer's
channels (and, through ReLU's positive homogeneity, a positive scale per channel). As in weight
matching for permutation alignment (Ainsworth et al., "Git Re-Basin"), each layer's permutation is a
linear assignment maximising the agreement of the weights around it, found by coordinate descent
over the layers. The last layer's channels are also read by the task modules' first convs, so g_T's
and g_S's input slices join its cost. The adapter is then that permutation (composed with the
protocol's reorder) with a per-channel scale, as a 1x1 map.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn
from scipy.optimize import linear_sum_assignment

from transplant.adapter import Adapter
from transplant.methods.base import ClosedFormMethod, register
from transplant.methods.stitching import set_channel_map
from transplant.spec.build import SpecModule
from transplant.spec.ops import get_op

SWEEPS = 30


def conv_chain(module: SpecModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight [O, I, k, k], bias [O]) of each conv of a category module that is a plain chain."""
    layers, previous = [], None
    for node in module.spec.nodes:
        if get_op(node.op).channelwise:  # ReLUs, pools, dropout: a channel map passes through them
            continue
        if node.op != "conv2d":
            raise ValueError(f"weight_match needs a chain of convs, ReLUs and pools; node '{node.name}' is {node.op}")
        conv = cast(nn.Conv2d, module.layers[node.name])
        if previous is not None and conv.in_channels != previous:
            raise ValueError(f"weight_match: node '{node.name}' does not read the previous conv")
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        layers.append((conv.weight.detach().cpu().double(), bias.detach().cpu().double()))
        previous = conv.out_channels
    if not layers:
        raise ValueError("weight_match: the category module has no conv")
    return layers


def input_slices(task: SpecModule) -> torch.Tensor:
    """[C_in, K]: for each input channel of a task module, the weights of every conv that reads the input."""
    parts = [cast(nn.Conv2d, task.layers[n.name]).weight.detach().cpu().double().transpose(0, 1).flatten(1)
             for n in task.spec.nodes if n.op == "conv2d" and "input" in n.inputs]
    return torch.cat(parts, 1) if parts else torch.zeros(task.spec.input_shape[0], 0, dtype=torch.float64)


def match_channels(layers_s: list, layers_t: list, consumer_s: torch.Tensor | None = None,
                   consumer_t: torch.Tensor | None = None, sweeps: int = SWEEPS) -> list[torch.Tensor]:
    """Per layer l, perms[l][a] = the channel of T that plays S's channel a."""
    shapes_s = [tuple(w.shape) for w, _ in layers_s]
    if shapes_s != [tuple(w.shape) for w, _ in layers_t]:
        raise ValueError(f"weight_match needs category modules of one architecture, got conv shapes {shapes_s} "
                         f"and {[tuple(w.shape) for w, _ in layers_t]}")
    perms = [torch.arange(w.shape[0]) for w, _ in layers_s]
    for _ in range(sweeps):
        changed = False
        for layer in range(len(layers_s)):
            new = _assign(layer, layers_s, layers_t, perms, consumer_s, consumer_t)
            changed |= not torch.equal(new, perms[layer])
            perms[layer] = new
        if not changed:
            break
    return perms


def _assign(k: int, layers_s: list, layers_t: list, perms: list, consumer_s, consumer_t) -> torch.Tensor:
    """Layer k's permutation with every other layer's held fixed (one step of the coordinate descent)."""
    (w_s, b_s), (w_t, b_t) = layers_s[k], layers_t[k]
    if k > 0:
        w_t = w_t[:, perms[k - 1]]                                 # T's inputs in S's order
    cost = w_s.flatten(1) @ w_t.flatten(1).T + torch.outer(b_s, b_t)
    if k + 1 < len(layers_s):
        n_s, n_t = layers_s[k + 1][0], layers_t[k + 1][0][perms[k + 1]]
        cost += n_s.transpose(0, 1).flatten(1) @ n_t.transpose(0, 1).flatten(1).T
    elif consumer_s is not None and consumer_t is not None and consumer_s.shape == consumer_t.shape:
        cost += consumer_s @ consumer_t.T
    _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


def channel_scales(layer_s: tuple, layer_t: tuple, perm: torch.Tensor) -> torch.Tensor:
    """Per S channel, ||w_S|| / ||w_T matched||, normalised to mean 1 (beta carries the global scale)."""
    norm_s = torch.cat([layer_s[0].flatten(1), layer_s[1][:, None]], 1).norm(dim=1)
    norm_t = torch.cat([layer_t[0].flatten(1), layer_t[1][:, None]], 1).norm(dim=1)[perm]
    ratio = norm_s / norm_t.clamp_min(1e-12)
    return ratio / ratio.mean().clamp_min(1e-12)


@register
class WeightMatch(ClosedFormMethod):
    name = "weight_match"
    needs_generic_category_module = True
    uses_samples = False
    auto_candidate = True


    @torch.no_grad()
    def solve(self, adapter: Adapter) -> None:
        f_s = self.problem.generic_category_module
        if f_s is None:
            raise ValueError("weight_match needs the generic net's category module")
        layers_s, layers_t = conv_chain(f_s), conv_chain(self.problem.category_module)
        perms = match_channels(layers_s, layers_t, input_slices(self.problem.student_task),
                               input_slices(self.problem.teacher_task))
        match = perms[-1]                                          # S channel a <- f's channel match[a]
        config = adapter.config
        order = config.permutation if config.permutation is not None else range(config.channels)
        position = torch.argsort(torch.tensor(order))              # f's channel c sits at reordered position[c]
        weight = torch.zeros(config.channels, config.channels)
        weight[torch.arange(config.channels), position[match]] = channel_scales(
            layers_s[-1], layers_t[-1], match).float()
        set_channel_map(adapter, weight)
