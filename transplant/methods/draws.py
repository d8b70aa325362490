"""Draws of (G, x_rand) and their cached pseudo-gradients B_T(G), B_S(G).

Both involve frozen weights only, so they are computed once, without autograd, in batches;
a training step just indexes the cache. The same draw always feeds student and teacher.
"""
from __future__ import annotations

import torch

from transplant.methods.base import DistillSettings
from transplant.pseudograd import draw_relu_masks, pseudo_backward, relu_nodes
from transplant.spec.build import SpecModule
from transplant.spec.fullyconv import enlarged_input_shape, fully_convolutional_module
from transplant.spec.schema import SpecError
from transplant.spec.shapes import infer_shapes
from transplant.tasks import get_task

CHUNK = 64


class PseudoGradientPool:
    def __init__(self, teacher_task: SpecModule, student_task: SpecModule, task: str,
                 settings: DistillSettings, generator: torch.Generator, same_net: bool = False):
        self.mode = settings.mode_for(task, cross_network=not same_net)
        if self.mode not in ("ones_masked", "enlarged", "uniform"):
            raise ValueError(f"unknown G mode '{self.mode}'")
        input_shape = None
        if self.mode == "enlarged":
            teacher_task = fully_convolutional_module(teacher_task)
            student_task = fully_convolutional_module(student_task)
            input_shape = enlarged_input_shape(teacher_task.spec, settings.enlarged_size)
        self.teacher, self.student, self.input_shape = teacher_task, student_task, input_shape
        device = next(teacher_task.parameters()).device  # drawn on the CPU (seeded), used where the modules are
        self.G, self.masks = self._draw(settings, generator)
        self.G, self.masks = self.G.to(device), {k: v.to(device) for k, v in self.masks.items()}
        self.teacher_grads = self._backward(self.teacher)
        self.student_grads = self._backward(self.student)
        t_norm = self.teacher_grads.flatten(1).norm(dim=1).mean()
        s_norm = self.student_grads.flatten(1).norm(dim=1).mean()
        self.alpha = float(t_norm / s_norm.clamp_min(1e-12))  # alpha = E||D'_T|| / E||D'_S0||
        scale = settings.lambda_scale or get_task(task).lambda_scale
        self.lam = scale / float(self.teacher_grads.abs().mean().clamp_min(1e-12))

    def _draw(self, settings: DistillSettings, generator: torch.Generator):
        spec = self.teacher.spec
        out_shape = infer_shapes(spec, self.input_shape)[spec.output]
        k = settings.pool_size
        if self.mode == "ones_masked":  # G = 1; dummy_2nd at every ReLU of the task module
            G = torch.ones(k, *out_shape)
            nodes, share = relu_nodes(spec), False
        elif self.mode == "enlarged":   # G ~ U[-1, 1]^{S x S}; dummy_2nd (shared x') at the lowest ReLU
            G = torch.rand((k, *out_shape), generator=generator) * 2 - 1
            nodes, share = relu_nodes(spec)[:1], True
        else:                           # uniform (segmentation): G ~ U[-1, 1]^{C x H x W}; dummy_1st everywhere
            G = torch.rand((k, *out_shape), generator=generator) * 2 - 1
            nodes, share = [], False
        self._check_same_relus(nodes)
        masks = draw_relu_masks(spec, nodes, k, generator, settings.p_ones, share, self.input_shape)
        return G, masks

    def _check_same_relus(self, nodes: list[str]) -> None:
        t_shapes = infer_shapes(self.teacher.spec, self.input_shape)
        try:
            s_shapes = infer_shapes(self.student.spec, self.input_shape)
        except SpecError as exc:
            raise SpecError(f"the generic task module cannot take the teacher's input: {exc}") from None
        if s_shapes[self.student.spec.output] != t_shapes[self.teacher.spec.output]:
            raise SpecError("teacher and generic task modules have different output shapes")
        for name in nodes:
            if s_shapes.get(name) != t_shapes[name]:
                raise SpecError(f"dummy_2nd masks need ReLU '{name}' in both task modules with one shape")

    @torch.no_grad()
    def _backward(self, module: SpecModule) -> torch.Tensor:
        parts = []
        for start in range(0, len(self.G), CHUNK):
            masks = {k: v[start:start + CHUNK] for k, v in self.masks.items()}
            parts.append(pseudo_backward(module, self.G[start:start + CHUNK], masks, self.input_shape))
        return torch.cat(parts)

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B_S(G), B_T(G)) for n cached draws."""
        idx = torch.randint(len(self.G), (n,), generator=generator)
        return self.student_grads[idx], self.teacher_grads[idx]
