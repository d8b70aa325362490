"""hybrid: start from the best data-free solution, then refine with the task loss on the samples.

"Best" is judged on the samples themselves (lowest task loss) among the data-free closed-form
methods that apply to the problem (weight_match, probe_stitch, identity); Adam then continues
from there on the task loss, exactly as direct_learn does from a random start.
"""
from __future__ import annotations

import copy

import torch

from transplant.adapter import Adapter
from transplant.methods.base import METHODS, Method, register

STARTS = ("weight_match", "probe_stitch", "identity")


@register
class Hybrid(Method):
    name = "hybrid"
    needs_samples = True
    auto_candidate = True

    def warm_start(self, adapter: Adapter) -> None:
        best, self.start_losses = None, {}
        every = torch.arange(len(self.features))
        for name in STARTS:
            method = METHODS[name]
            if method.needs_generic_category_module and self.problem.generic_category_module is None:
                continue
            trial = copy.deepcopy(adapter)
            try:
                method(self.problem, self.config, self.generator).solve(trial)
            except ValueError:  # e.g. weight_match across different architectures
                continue
            with torch.no_grad():
                loss = float(self.task_loss(trial.eval(), every)[0])
            self.start_losses[name] = loss
            if best is None or loss < best[0]:
                best = (loss, name, trial)
        if best is not None:
            self.start = best[1]
            adapter.load_state_dict(best[2].state_dict())

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        task, _ = self.task_loss(adapter, self.sample_batch())
        return task, {"task_loss": float(task.detach())}
