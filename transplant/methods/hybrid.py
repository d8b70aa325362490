"""hybrid: start from the best data-free solution, then refine with the task loss on the samples.

"Best" is judged on the samples' images among the data-free closed-form methods that apply to
the problem (weight_match, probe_stitch, identity): the relative distance ||h(f(I)) - f_S(I)|| /
||f_S(I)|| to the generic net's own features, which uses every pixel and channel; without f_S, the
errors on the samples, then the task loss. The labels alone mislead: on 20 samples the identity
adapter of a reordered cow made no more mistakes than weight matching and had a lower cross-entropy,
at three times its test error. Adam then continues from there on the task loss, as direct_learn
does from a random start.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import Method, register
from transplant.methods.stitching import best_data_free_start
from transplant.tasks import get_task


@register
class Hybrid(Method):
    name = "hybrid"
    needs_samples = True
    auto_candidate = True
    relative_cost = 1.2

    def warm_start(self, adapter: Adapter) -> None:
        every = torch.arange(len(self.labelled()[1]))
        self.start, self.start_scores = best_data_free_start(self, adapter, lambda trial: self._score(trial, every))

    @torch.no_grad()
    def _score(self, adapter: Adapter, idx: torch.Tensor) -> tuple[float, float]:
        """Lower is better: (feature distance to f_S, 0), or (errors on the samples, task loss)."""
        f_s = self.problem.generic_category_module
        samples, features = self.labelled()
        if f_s is not None:
            target = f_s(samples.images[idx])
            return float((adapter(features[idx]) - target).norm() / target.norm().clamp_min(1e-12)), 0.0
        loss, output = self.task_loss(adapter, idx)
        masks = None if samples.masks is None else samples.masks[idx]
        return get_task(self.problem.task).errors(output, samples.labels[idx], masks), float(loss)

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        task, _ = self.task_loss(adapter, self.sample_batch())
        return task, {"task_loss": float(task.detach())}
