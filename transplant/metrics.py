"""Task metrics: binary error rate, pixel accuracy and object IoU (all in percent)."""
from __future__ import annotations

from typing import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(forward: Forward, images: torch.Tensor, batch_size: int = 256,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Outputs on the CPU, computed batch by batch on `device`."""
    return torch.cat([forward(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def error_rate(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Single-category classification: a positive logit means "this category"."""
    predicted = (logits.reshape(-1) > 0).long()
    return 100.0 * float((predicted != labels.reshape(-1)).float().mean())


def pixel_accuracy(logits: torch.Tensor, masks: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == masks).float().mean())


def object_iou(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Intersection over union of the object class (label 1)."""
    predicted = logits.argmax(1) == 1
    truth = masks == 1
    union = float((predicted | truth).sum())
    return 100.0 * float((predicted & truth).sum()) / union if union else 100.0


def background_pixel_accuracy(masks: torch.Tensor) -> float:
    """What predicting "background" everywhere would score: the floor pixel accuracy must beat."""
    return 100.0 * float((masks == 0).float().mean())


def evaluate(forward: Forward, task: str, images: torch.Tensor, labels: torch.Tensor,
             masks: torch.Tensor | None = None, device: torch.device | str = "cpu") -> dict[str, float]:
    """All metrics of a task on a test split (the task type's `score`)."""
    from transplant.tasks import get_task  # the task types score with this module's functions

    scorer = get_task(task).score
    return scorer(predict(forward, images, device=device), labels, masks)
