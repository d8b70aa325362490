"""probe_distill: data-free distillation of the teacher's answers through the generic task module.

Stitching (weight_match, probe_stitch) makes h(f(I)) look like the generic net's own features of an
image, f_S(I); the generic task module then answers for the generic category, and a target it
only half accepts (the dog classifier says "dog" to 65-87 % of sheep) stays half accepted. The
teacher g_T knows better and is at hand, so its answers are distilled, on images no site owns:
the coordinator's probes (`transplant.probes`: mostly "no") and probes the teacher itself turns
into its category (model inversion, as in DeepInversion: gradient steps on the pixels towards the
teacher's "yes", with a smoothness prior), so both answers are taught. Adam starts from the
data-free closed-form solution whose answers on those images are closest to the teacher's.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register
from transplant.methods.stitching import best_data_free_start
from transplant.probes import probes_for
from transplant.spec.schema import preprocess_of
from transplant.tasks import get_task

PROBES = 256           # plain probes, and as many turned into the category
INVERSION_STEPS = 40
INVERSION_LR = 0.05    # in units of the pixel range
SMOOTHNESS = 0.05      # weight of the total-variation prior, relative to the task loss
CHUNK = 128


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _blob_masks(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """One filled ellipse per image (label 1 inside): the object a segmentation teacher is asked to see."""
    y = torch.arange(height, dtype=torch.float32).view(1, -1, 1) / height
    x = torch.arange(width, dtype=torch.float32).view(1, 1, -1) / width
    c = 0.3 + 0.4 * torch.rand(n, 2, generator=generator)
    r = 0.15 + 0.2 * torch.rand(n, 2, generator=generator)
    inside = ((y - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2 + ((x - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2
    return (inside <= 1).long()


@register
class ProbeDistill(Method):
    name = "probe_distill"
    uses_samples = False
    auto_candidate = True
    relative_cost = 2.6

    def warm_start(self, adapter: Adapter) -> None:
        p = self.problem
        device = next(p.category_module.parameters()).device
        probes = probes_for(p.category_module.spec, PROBES, self.config.seed).to(device)
        images = torch.cat([probes, self._invert(probes)])
        with torch.no_grad():
            self.inputs = torch.cat([p.category_module(x) for x in images.split(CHUNK)])
            self.targets = torch.cat([p.teacher_task(x) for x in self.inputs.split(CHUNK)])
        self.start, _ = best_data_free_start(self, adapter, self._start_score)

    @torch.no_grad()
    def _start_score(self, adapter: Adapter) -> float:
        return float(self._distill(adapter, torch.arange(len(self.inputs))))

    def _invert(self, start: torch.Tensor) -> torch.Tensor:
        """Probes moved by gradient steps until the teacher sees its category in them (pixels stay in range)."""
        p, task = self.problem, get_task(self.problem.task)
        prep = preprocess_of(p.category_module.spec)
        mean = torch.tensor(prep["mean"], dtype=start.dtype, device=start.device).view(1, -1, 1, 1)
        std = torch.tensor(prep["std"], dtype=start.dtype, device=start.device).view(1, -1, 1, 1)
        low, high = (0 - mean) / std, (1 - mean) / std
        x = start.clone().requires_grad_(True)
        labels = torch.ones(len(x), dtype=torch.long, device=x.device)
        masks = _blob_masks(len(x), x.shape[-2], x.shape[-1], self.generator).to(x.device) if task.needs_masks else None
        optimiser = torch.optim.Adam([x], lr=INVERSION_LR * float((high - low).mean()))
        for _ in range(INVERSION_STEPS):
            out = p.teacher_task(p.category_module(x))
            loss = task.loss(out, labels, masks) + SMOOTHNESS * _total_variation(x)
            grad, = torch.autograd.grad(loss, x)
            x.grad = grad
            optimiser.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
        return x.detach()

    def _distill(self, adapter: Adapter, idx: torch.Tensor) -> torch.Tensor:
        """KL divergence from the teacher's answers (cross-entropy less the teacher's own entropy): 0 = its answers."""
        student, target = self.problem.student_task(adapter(self.inputs[idx])), self.targets[idx]
        soft_loss = get_task(self.problem.task).soft_loss
        return soft_loss(student, target) - soft_loss(target, target)

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        distill = self._distill(adapter, self.sample_batch(len(self.inputs)))
        return distill, {"distill_loss": float(distill.detach())}
