"""Task types and their registry: everything that differs between classification and segmentation.

A task type is one registration (`register(TaskType(...))`): its loss, the figures it reports, which
figure ranks candidates, which images it is scored on, how pseudo-gradients G are drawn for it and
what its task module's output means. Code elsewhere looks these up by the task's name instead of
branching on it, so adding a task type touches no other file (beyond an architecture for its head).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is not loaded here: the admin CLI reads metric names and defaults without it
    import torch

Loss = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None"], "torch.Tensor"]  # (output, labels, masks)
Score = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None"], dict[str, float]]
Errors = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor | None"], float]
SoftLoss = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]  # (student output, teacher output)
Interpret = Callable[["torch.Tensor", dict[str, Any], str], dict[str, Any]]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Metric:
    name: str
    label: str              # for plots and tables, with its unit
    lower_is_better: bool = False


@dataclass(frozen=True)
class OutputMeaning:
    """What a task module's output means (`metadata.output` of its spec, kind = the task's name)."""

    fields: frozenset[str]                                   # allowed beside "kind" and "classes"
    default: Callable[[Shape, str], dict[str, Any]]          # (output shape, category) -> meaning
    problem: Callable[[dict[str, Any], Shape], str | None]   # what is wrong with a meaning, or None
    interpret: Interpret                                     # one image's output -> its answer
    rank: int | None = None      # output dims (no batch) an old spec's default is read off; None: any other


@dataclass(frozen=True)
class TaskType:
    name: str
    loss: Loss                       # the task's training loss on labelled samples
    soft_loss: SoftLoss              # cross-entropy against a teacher's outputs (Hinton's distill)
    score: Score                     # every figure of `metrics` on a test split's outputs
    metrics: tuple[Metric, ...]      # the first is the headline every site reports (tables, plots)
    primary: tuple[str, ...]         # ranks candidates and gates the net: the first one reported
    errors: Errors                   # % of the samples wrong (hybrid ranks its starts by it)
    output: OutputMeaning
    needs_masks: bool = False        # trained and scored on per-pixel masks
    positives_only: bool = False     # trained and scored on the images that show the category only
    dense_output: bool = False       # one output per pixel: G is drawn at random over it (jacobian too)
    g_mode_same_net: str = "ones_masked"   # ALGORITHM.md "Choice of G" inside one net (Exp.1)
    g_mode_cross_net: str = "enlarged"     # ... across nets (Exp.2)
    lambda_scale: float = 10.0             # lambda = scale / mean |D'_T| (back-distillation)

    @property
    def headline(self) -> Metric:
        return self.metrics[0]

    def primary_metric(self, reported: dict[str, float]) -> str:
        """The first of `primary` the site reported, else the last (the one every site reports)."""
        return next((m for m in self.primary if m in reported), self.primary[-1])

    def g_mode(self, cross_network: bool) -> str:
        return self.g_mode_cross_net if cross_network else self.g_mode_same_net

    def keep(self, labels: "torch.Tensor") -> "torch.Tensor | None":
        """Which images the task is trained and scored on (None: all of them)."""
        return labels == 1 if self.positives_only else None


TASK_TYPES: dict[str, TaskType] = {}


def register(task: TaskType) -> TaskType:
    """Add a task type under its name; a name is registered once."""
    if not task.name:
        raise ValueError("a task type needs a name")
    if task.name in TASK_TYPES:
        raise ValueError(f"task type '{task.name}' is already registered")
    if not task.metrics or not task.primary:
        raise ValueError(f"task type '{task.name}' needs at least one metric and one primary metric")
    TASK_TYPES[task.name] = task
    return task


def get_task(name: str) -> TaskType:
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task {name!r}; use one of {task_names()}")
    return TASK_TYPES[name]


def task_names() -> list[str]:
    return list(TASK_TYPES)


def lower_is_better(metric: str) -> bool:
    """Whether a reported figure (any task's) improves as it falls, e.g. error_rate."""
    return any(m.name == metric and m.lower_is_better for t in TASK_TYPES.values() for m in t.metrics)


def default_task_for(output_shape: Shape) -> TaskType:
    """The task type an old spec without `metadata.output` is read as, from its output's rank."""
    exact = [t for t in TASK_TYPES.values() if t.output.rank == len(output_shape)]
    fallback = [t for t in TASK_TYPES.values() if t.output.rank is None]
    return (exact or fallback)[0]
