"""The teacher's training loss and learning-rate schedule (shared by site agents and the benchmark's nets)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from transplant.architectures import CLASSIFICATION, SEGMENTATION
from transplant.teacher import TeacherTraining, joint_loss, lr_schedule, task_loss


class _Tasks(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 1))
        self.seg = nn.Conv2d(4, 2, 1)

    def items(self):
        return {CLASSIFICATION: self.cls, SEGMENTATION: self.seg}.items()


def test_joint_loss_segments_only_the_category_images():
    torch.manual_seed(0)
    tasks = _Tasks()
    features = torch.randn(6, 4, 4, 4)
    labels = torch.tensor([1, 0, 1, 0, 0, 1])
    masks = torch.randint(0, 2, (6, 4, 4))
    got = joint_loss(features, dict(tasks.items()), labels, masks, seg_weight=3.0)
    keep = labels == 1
    want = (task_loss(CLASSIFICATION, tasks.cls(features), labels, None)
            + 3.0 * task_loss(SEGMENTATION, tasks.seg(features[keep]), labels[keep], masks[keep]))
    assert torch.allclose(got, want)
    # a batch of negatives only: their empty masks teach nothing, only the classifier learns
    negatives = torch.zeros(6, dtype=torch.long)
    assert torch.allclose(joint_loss(features, dict(tasks.items()), negatives, masks, 3.0),
                          task_loss(CLASSIFICATION, tasks.cls(features), negatives, None))


@pytest.mark.parametrize("cosine", [False, True])
def test_lr_schedule(cosine):
    optimiser = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=2e-3)
    schedule = lr_schedule(optimiser, TeacherTraining(lr=2e-3, cosine=cosine), total_steps=10)
    lrs = []
    for _ in range(10):
        optimiser.step()
        schedule.step()
        lrs.append(optimiser.param_groups[0]["lr"])
    if cosine:
        assert lrs == sorted(lrs, reverse=True) and lrs[0] < 2e-3 and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    else:
        assert lrs == [2e-3] * 10
