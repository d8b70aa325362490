"""Promotion by evidence: which figure counts for a task, the best candidate, and the gate.

A result enters a net only if (a) its gap to the teacher, in points of the task's primary metric, is
at most the gate (`max_gap`), and (b) it beats the adapter the route has now. Otherwise the job is
REJECTED and the net does not change: a route is never silently made worse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transplant.tasks import TASK_TYPES, lower_is_better

if TYPE_CHECKING:
    from coordinator.jobs import CandidateResult

TEACHER_PREFIX = "teacher_"
# Default gates (points). A binary classifier at chance has 50 % error: 30 points keep it out wherever
# the teacher is below 20 %. A segmenter predicting background everywhere has 0 % object IoU: 40
# points keep it out wherever the teacher's IoU is above 40 %. Both leave room for the cross-net
# transplants that do work at this scale (README: about 20-30 points behind their teachers).
DEFAULT_MAX_GAP = {"classification": 30.0, "segmentation": 40.0}
FALLBACK_MAX_GAP = 30.0  # a task without its own default


def split_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(the transplanted net's figures, the teacher's figures without the `teacher_` prefix)."""
    teacher = {k[len(TEACHER_PREFIX):]: v for k, v in metrics.items() if k.startswith(TEACHER_PREFIX)}
    return {k: v for k, v in metrics.items() if not k.startswith(TEACHER_PREFIX)}, teacher


def primary_metric(task: str, metrics: dict[str, float]) -> str:
    """The task type's (classification: error_rate; segmentation: object IoU where the site reports it,
    else pixel accuracy); for a task without a type, the first figure reported."""
    if task in TASK_TYPES:
        return TASK_TYPES[task].primary_metric(metrics)
    own, _ = split_metrics(metrics)
    return sorted(own)[0] if own else ""


def gap(metric: str, value: float, teacher: float) -> float:
    """Points the transplant trails its teacher by (negative: it is better)."""
    return value - teacher if lower_is_better(metric) else teacher - value


def better(metric: str, value: float, than: float) -> bool:
    return value < than if lower_is_better(metric) else value > than


def best_candidate(task: str, candidates: Iterable[CandidateResult]) -> CandidateResult | None:
    """The evaluated candidate with the best primary figure; the earliest one wins a tie."""
    best: CandidateResult | None = None
    for candidate in candidates:
        metric = primary_metric(task, candidate.metrics)
        if candidate.adapter is None or metric not in candidate.metrics:
            continue
        if best is None or better(metric, candidate.metrics[metric], best.metrics[metric]):
            best = candidate
    return best


def max_gap_for(task: str, job_gap: float | None, defaults: dict[str, float]) -> float:
    """The job's own gate if it set one, else the coordinator's for the task."""
    if job_gap is not None:
        return job_gap
    return defaults.get(task, DEFAULT_MAX_GAP.get(task, FALLBACK_MAX_GAP))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(task: str, metrics: dict[str, float], current: dict[str, float] | None, max_gap: float) -> Decision:
    """`metrics`: the site's figures of the new result (teacher_* included); `current`: the route's
    adapter's figures in the same form (None: the route has no adapter yet)."""
    metric = primary_metric(task, metrics)
    own, teacher = split_metrics(metrics)
    if metric not in own:
        return Decision(False, f"the site reported no {metric or 'figure'} for the result")
    if metric not in teacher:
        return Decision(False, f"the site reported no teacher {metric} to compare the result with")
    behind = gap(metric, own[metric], teacher[metric])
    figures = f"{metric} {own[metric]:.2f} vs teacher {teacher[metric]:.2f}"
    if behind > max_gap:
        return Decision(False, f"{figures}: {behind:.2f} points behind the teacher, the gate allows {max_gap:g}")
    if current is not None:
        now = split_metrics(current)[0].get(metric)
        if now is not None and not better(metric, own[metric], now):
            return Decision(False, f"{figures}: not better than the route's current adapter ({metric} {now:.2f})")
        if now is not None:
            return Decision(True, f"{figures}: within the gate ({max_gap:g}) and better than the current "
                                  f"adapter ({metric} {now:.2f})")
    return Decision(True, f"{figures}: within the gate ({max_gap:g} points)")
