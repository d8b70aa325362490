"""One transplant job from modules and feature statistics alone: what a coordinator's worker runs.

Inputs are exactly what sites deliver (specs + weights + E||f(I)||_F), never images, except the
optional few labelled samples of the few-shot setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from transplant.adapter import AdapterConfig
from transplant.methods import Samples, TrainConfig, TransplantProblem
from transplant.methods.base import Progress
from transplant.spec.build import SpecModule
from transplant.spec.shapes import infer_shapes
from transplant.trainer import TrainResult, train_adapter


@dataclass(frozen=True)
class JobConfig:
    """What one job learns: the task, the adapter's shape and how it is trained (one TrainConfig, not a copy)."""

    task: str                      # a registered task type ("classification", "segmentation")
    adapter_layers: int = 1
    kernel_size: int = 1
    reorder: bool = False          # a random channel permutation (the paper's test protocol)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def create(cls, task: str, adapter_layers: int = 1, kernel_size: int = 1, reorder: bool = False,
               **train: Any) -> JobConfig:
        """Keyword form: everything but the adapter's shape goes to the TrainConfig (method, steps, lr, ...)."""
        return cls(task, adapter_layers, kernel_size, reorder, TrainConfig(**train))

    def with_method(self, method: str) -> JobConfig:
        return replace(self, train=replace(self.train, method=method))

    # the TrainConfig's fields most callers read, read through (they are set only on `train`)
    @property
    def method(self) -> str:
        return self.train.method

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def seed(self) -> int:
        return self.train.seed


def beta_from_stats(generic_feature_norm: float, new_feature_norm: float) -> float:
    """beta = E||f_S(I)||_F / E||f(I)||_F: each site measures its own, sends only the number."""
    if not (generic_feature_norm > 0 and new_feature_norm > 0):
        raise ValueError(f"feature norms must be positive, got {generic_feature_norm} and {new_feature_norm}")
    return generic_feature_norm / new_feature_norm


def make_problem(config: JobConfig, category_module: SpecModule, teacher_task: SpecModule,
                 generic_task: SpecModule, beta: float, samples: Samples | None = None,
                 generic_category_module: SpecModule | None = None, same_net: bool | None = None) -> TransplantProblem:
    """`same_net`: the adapter goes between f and g of one net (Exp.1); None: when teacher_task is
    generic_task (one object), for callers that pass one net's modules directly."""
    x_shape = infer_shapes(category_module.spec)[category_module.spec.output]
    if tuple(generic_task.spec.input_shape) != tuple(x_shape):
        raise ValueError(f"the generic task module reads {list(generic_task.spec.input_shape)}, "
                         f"the category module gives {list(x_shape)}")
    channels = x_shape[0]
    permutation = None
    if config.reorder:
        permutation = tuple(torch.randperm(channels, generator=torch.Generator().manual_seed(config.seed + 7919)).tolist())
    adapter = AdapterConfig(channels=channels, layers=config.adapter_layers, kernel_size=config.kernel_size,
                            beta=float(beta), permutation=permutation)
    return TransplantProblem(config.task, category_module, teacher_task, generic_task, adapter, samples,
                             generic_category_module, teacher_task is generic_task if same_net is None else same_net)


def run_job(config: JobConfig, problem: TransplantProblem, progress: Progress | None = None,
            should_stop=None) -> TrainResult:
    return train_adapter(problem, config.train, progress=progress, should_stop=should_stop)
