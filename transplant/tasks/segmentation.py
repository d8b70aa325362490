"""Segmentation of the category: per-pixel class scores [K, H, W], argmax, 0 = background.

Trained and scored on the images that show the category (as FCNs are trained on VOC's images of it):
a negative's empty mask would mostly teach "background everywhere". torch is imported inside the
functions: the registry's names and defaults load without it (base.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transplant.tasks.base import Metric, OutputMeaning, Shape, TaskType, register

if TYPE_CHECKING:
    import torch

SEGMENTATION = "segmentation"
MASK_RULES = ("argmax",)


def _masks(masks: torch.Tensor | None) -> torch.Tensor:
    if masks is None:  # what F.cross_entropy raises for a None target, with the reason
        raise TypeError(f"task '{SEGMENTATION}' needs masks, got None")
    return masks


def _loss(output: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    """Per-pixel cross-entropy."""
    from torch.nn import functional as F

    return F.cross_entropy(output, _masks(masks))


def _soft_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return -(teacher.softmax(dim=1) * student.log_softmax(dim=1)).sum(1).mean()


def _score(logits: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> dict[str, float]:
    from transplant.metrics import object_iou, pixel_accuracy

    if masks is None:
        raise ValueError("segmentation needs masks")
    return {"pixel_accuracy": pixel_accuracy(logits, masks), "iou": object_iou(logits, masks)}


def _errors(output: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> float:
    from transplant.metrics import pixel_accuracy

    return 100.0 - pixel_accuracy(output, _masks(masks))


def _default(output_shape: Shape, category: str) -> dict[str, Any]:
    extra = [f"class{k}" for k in range(2, output_shape[0] if output_shape else 2)]
    return {"kind": SEGMENTATION, "classes": ["background", category] + extra, "mask": "argmax"}


def _problem(meaning: dict[str, Any], output_shape: Shape) -> str | None:
    classes = meaning["classes"]
    if len(output_shape) != 3 or len(classes) != output_shape[0]:
        return (f"metadata.output.classes names {len(classes)} class(es) but the segmentation "
                f"output is {list(output_shape)} (one channel per class)")
    if meaning["mask"] not in MASK_RULES:
        return f"metadata.output.mask must be one of {list(MASK_RULES)}, got {meaning['mask']!r}"
    return None


def _interpret(logits: torch.Tensor, meaning: dict[str, Any], category: str) -> dict[str, Any]:
    """mask = argmax ([H, W]), foreground_fraction, score = mean foreground probability."""
    mask = logits.argmax(0)
    fraction = float((mask != 0).float().mean())
    score = float(1 - logits.softmax(0)[0].mean())
    return {"score": score, "label": category if fraction > 0 else f"not {category}", "mask": mask,
            "foreground_fraction": fraction}


TASK = register(TaskType(
    name=SEGMENTATION, loss=_loss, soft_loss=_soft_loss, score=_score, errors=_errors,
    metrics=(Metric("pixel_accuracy", "pixel accuracy (%)"), Metric("iou", "object IoU (%)")),
    primary=("iou", "pixel_accuracy"),
    output=OutputMeaning(frozenset({"mask"}), _default, _problem, _interpret, rank=3),
    needs_masks=True, positives_only=True, dense_output=True,
    g_mode_same_net="uniform", g_mode_cross_net="uniform", lambda_scale=1.0))
