"""What every transplant method sees, and the registry that selects one by name (like torchdistill)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import torch

from transplant.adapter import Adapter, AdapterConfig
from transplant.spec.build import SpecModule
from transplant.tasks import get_task
from transplant.teacher import task_loss


@dataclass
class Samples:
    """The few labelled samples of the new category (may be empty: data-free)."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class TransplantProblem:
    """Transplant category module f into frozen task module g_S, mimicking g_T (paper Eqn. 1)."""

    task: str                                  # a task type's name (transplant.tasks)
    category_module: SpecModule                # f: the new category's module (frozen)
    teacher_task: SpecModule                   # g_T: the new category's own task module (frozen)
    student_task: SpecModule                   # g_S: the generic task module (frozen)
    adapter_config: AdapterConfig              # M, n, kernel, beta, permutation
    samples: Samples | None = None
    generic_category_module: SpecModule | None = None  # f_S: read by the stitching methods
    same_net: bool = False         # g_T and g_S are one module (the paper's Exp.1): picks the G mode

    @property
    def num_samples(self) -> int:
        return 0 if self.samples is None else len(self.samples)


@dataclass(frozen=True)
class DistillSettings:
    """How pseudo-gradients are drawn (ALGORITHM.md "Choice of G")."""

    g_mode: str = "auto"          # "ones_masked" (Exp.1), "enlarged" (Exp.2), "uniform" (segmentation);
    #                               auto: the task type's (transplant.tasks)
    p_ones: float = 0.2           # fraction of ones in dummy_2nd masks
    enlarged_size: int = 7        # S of the enlarged G
    lambda_scale: float | None = None  # None: the task type's (10 classification, 1 segmentation)
    draws_per_step: int = 16
    pool_size: int = 512          # draws computed once and cached (B_T(G), B_S(G) need no gradients)
    lstsq_draws: int = 64         # draws for the one-shot solve (each gives H x W equations per channel)

    def mode_for(self, task: str, cross_network: bool = False) -> str:
        """auto: the task type's mode: for classifiers G = 1 with dummy_2nd masks inside one net
        (paper Exp.1), the enlarged G across nets (paper Exp.2); uniform G for segmentation."""
        if self.g_mode != "auto":
            return self.g_mode
        return get_task(task).g_mode(cross_network)


@dataclass(frozen=True)
class TrainConfig:
    method: str = "back_distill"
    steps: int = 600
    lr: float = 1e-3
    seed: int = 0
    batch_size: int = 64          # labelled samples per step (all of them when fewer)
    solver: str = "auto"          # "iterative" | "lstsq" (closed form) | "auto": lstsq where the loss is linear LS
    distill: DistillSettings = field(default_factory=DistillSettings)


Progress = Callable[[int, int, dict[str, float]], None]  # (step, total, loss parts)


class Method(ABC):
    """A way to learn the adapter; only the adapter's parameters ever change."""

    name = ""
    needs_samples = False                   # False: data-free (modules and feature statistics only)
    uses_samples = True                     # False: the result is the same with or without samples
    needs_generic_category_module = False   # reads f_S, the generic net's own category module
    auto_candidate = False                  # part of the `auto` method's candidate set
    relative_cost = 1.0    # one job's wall time over direct_learn's (perf.json auto_single_job_s): `auto` order

    def __init__(self, problem: TransplantProblem, config: TrainConfig, generator: torch.Generator):
        if self.needs_samples and problem.num_samples == 0:
            raise ValueError(f"method '{self.name}' needs labelled samples; got none")
        self.problem = problem
        self.config = config
        self.generator = generator
        self.features: torch.Tensor | None = None
        if problem.samples is not None and len(problem.samples):
            with torch.no_grad():  # f is frozen: its features of the samples are computed once
                self.features = problem.category_module(problem.samples.images)

    @property
    def iterative(self) -> bool:
        """False for methods solved in closed form (then `solve` sets the adapter)."""
        return True

    def labelled(self) -> tuple[Samples, torch.Tensor]:
        """(the samples, f's features of them): set whenever the problem has samples, which every method
        that reads them has (`needs_samples`, checked in __init__)."""
        assert self.problem.samples is not None and self.features is not None, "no labelled samples"
        return self.problem.samples, self.features

    def sample_batch(self, n: int | None = None) -> torch.Tensor:
        """One step's indices out of n items (default: the labelled samples); all of them when few."""
        n = len(self.labelled()[1]) if n is None else n
        if n <= self.config.batch_size:
            return torch.arange(n)
        return torch.randperm(n, generator=self.generator)[: self.config.batch_size]

    def task_loss(self, adapter: Adapter, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, student output) on labelled samples idx."""
        s, features = self.labelled()
        output = self.problem.student_task(adapter(features[idx]))
        masks = None if s.masks is None else s.masks[idx]
        return task_loss(self.problem.task, output, s.labels[idx], masks), output

    @abstractmethod
    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        """One step's loss and its named parts (for progress and metrics)."""

    def solve(self, adapter: Adapter) -> None:
        """Closed-form methods set the adapter here instead of iterating."""
        raise NotImplementedError

    def warm_start(self, adapter: Adapter) -> None:
        """Called once before iterating; a method may set a better starting point than the random init."""


class ClosedFormMethod(Method):
    """A method solved in one shot: `solve` sets the adapter; there is no loss to iterate on."""

    @property
    def iterative(self) -> bool:
        return False

    def loss(self, adapter: Adapter) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{self.name} is solved in closed form; call solve()")

    @abstractmethod
    def solve(self, adapter: Adapter) -> None:
        """Set the adapter's weights."""


METHODS: dict[str, type[Method]] = {}


AUTO = "auto"  # not a method: the job trains every candidate (`auto_candidates`) and keeps the best


def register(cls: type[Method]) -> type[Method]:
    """Add a method class under its `name`; a name is registered once (as peft's register_peft_method)."""
    if not cls.name or cls.name == AUTO:
        raise ValueError(f"a method needs a name other than '' and '{AUTO}'")
    if cls.name in METHODS:
        raise ValueError(f"method '{cls.name}' is already registered (by {METHODS[cls.name].__module__})")
    METHODS[cls.name] = cls
    return cls


def auto_candidates(num_samples: int, has_generic_category_module: bool = True) -> tuple[str, ...]:
    """The methods an `auto` job trains, following the data available: data-free ones always, the
    sample-based ones when samples exist; methods that read f_S only where it is known.

    Closed-form methods come first: their tasks end in moments, so on a few workers the site scores them
    while the iterative candidates, queued behind, still train (instead of all of them at the end). The
    iterative ones follow costliest first: on fewer workers than candidates, starting the longest job last
    would add all of it to the job's wall time (longest-processing-time-first scheduling)."""
    def order(kv: tuple[str, type[Method]]) -> tuple[bool, float, str]:
        return not issubclass(kv[1], ClosedFormMethod), -kv[1].relative_cost, kv[0]

    return tuple(name for name, cls in sorted(METHODS.items(), key=order)
                 if cls.auto_candidate and (num_samples > 0 or not cls.needs_samples)
                 and (has_generic_category_module or not cls.needs_generic_category_module))


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]

