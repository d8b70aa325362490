"""The teacher's training loss and learning-rate schedule (shared by site agents and the benchmark's nets)."""
from __future__ import annotations

import dataclasses

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


def test_train_teacher_starts_from_a_base_where_shapes_match():
    """A shared pre-trained start: every layer whose name and shape agree is copied, the others keep He init."""
    from transplant.architectures import teacher_specs, vgg_small
    from transplant.teacher import TeacherNet, copy_matching, train_teacher

    cfg = vgg_small(width=4, depth=3, image_size=8, in_channels=1, fc=8)
    torch.manual_seed(1)
    base = TeacherNet(teacher_specs(dataclasses.replace(cfg, num_outputs=3), (CLASSIFICATION,))).state_dict()
    net = train_teacher(teacher_specs(cfg, (CLASSIFICATION,)), torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]),
                        config=TeacherTraining(epochs=0), init=base)
    state = net.state_dict()
    last = "tasks.classification.layers.fc8"
    assert state[f"{last}.weight"].shape[0] == 1 and base[f"{last}.weight"].shape[0] == 3  # not copied
    assert all(torch.equal(state[k], v) for k, v in base.items() if not k.startswith(last))
    copied = copy_matching(TeacherNet(teacher_specs(cfg, (CLASSIFICATION,))), base)
    assert copied and not any(k.startswith(last) for k in copied)
