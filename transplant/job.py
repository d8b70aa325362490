"""One transplant job from modules and feature statistics alone: what a coordinator's worker runs.

Inputs are exactly what sites deliver (specs + weights + E||f(I)||_F), never images, except the
optional few labelled samples of the few-shot setting.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from transplant.adapter import AdapterConfig
from transplant.methods import DistillSettings, Samples, TrainConfig, TransplantProblem
from transplant.methods.base import Progress
from transplant.spec.build import SpecModule
from transplant.spec.shapes import infer_shapes
from transplant.trainer import TrainResult, train_adapter


@dataclass(frozen=True)
class JobConfig:
    task: str                      # "classification" | "segmentation"
    method: str = "back_distill"
    adapter_layers: int = 1
    kernel_size: int = 1
    reorder: bool = False          # a random channel permutation (the paper's test protocol)
    steps: int = 600
    lr: float = 1e-3
    seed: int = 0
    solver: str = "auto"           # back_distill: "lstsq" one-shot where data-free with 1 layer, else iterative
    distill: DistillSettings = field(default_factory=DistillSettings)


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
    train = TrainConfig(method=config.method, steps=config.steps, lr=config.lr, seed=config.seed,
                        solver=config.solver, distill=config.distill)
    return train_adapter(problem, train, progress=progress, should_stop=should_stop)
