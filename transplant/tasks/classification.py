"""Single-category classification: one logit, above the threshold (0) means "this category".

torch is imported inside the functions: the registry's names and defaults load without it (base.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transplant.tasks.base import Metric, OutputMeaning, Shape, TaskType, register

if TYPE_CHECKING:
    import torch

CLASSIFICATION = "classification"


def _loss(output: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    """Binary cross-entropy on the single logit."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(output.reshape(-1), labels.float())


def _soft_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One logit: Bernoulli cross-entropy against the teacher's probability."""
    from torch.nn import functional as F

    return F.binary_cross_entropy_with_logits(student, teacher.sigmoid())


def _errors(output: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> float:
    from transplant.metrics import error_rate

    return error_rate(output, labels)


def _score(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> dict[str, float]:
    return {"error_rate": _errors(logits, labels, masks)}


def _default(output_shape: Shape, category: str) -> dict[str, Any]:
    return {"kind": CLASSIFICATION, "logits": 1, "threshold": 0.0, "classes": [f"not {category}", category]}


def _problem(meaning: dict[str, Any], output_shape: Shape) -> str | None:
    threshold = meaning["threshold"]
    if tuple(output_shape) != (1,) or meaning["logits"] != 1:
        return f"metadata.output says one classification logit but the module outputs {list(output_shape)}"
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold \
            or abs(threshold) == float("inf"):
        return f"metadata.output.threshold must be a number, got {threshold!r}"
    if len(meaning["classes"]) != 2:
        return f"metadata.output.classes must name 2 classes (below, above the threshold), got {meaning['classes']!r}"
    return None


def _interpret(output: torch.Tensor, meaning: dict[str, Any], category: str) -> dict[str, Any]:
    """score = the logit, probability = sigmoid(logit), label = the category above the threshold."""
    import torch

    logit = float(output.reshape(-1)[0])
    return {"score": logit, "probability": float(torch.sigmoid(torch.tensor(logit))),
            "label": category if logit > meaning["threshold"] else f"not {category}"}


TASK = register(TaskType(
    name=CLASSIFICATION, loss=_loss, soft_loss=_soft_loss, score=_score, errors=_errors,
    metrics=(Metric("error_rate", "error rate (%)", lower_is_better=True),), primary=("error_rate",),
    output=OutputMeaning(frozenset({"logits", "threshold"}), _default, _problem, _interpret),
    g_mode_same_net="ones_masked", g_mode_cross_net="enlarged", lambda_scale=10.0))
