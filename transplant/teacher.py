"""Teacher nets: one category module shared by task modules, trained on one site's own data.

This is the code a site agent runs; the experiments use it too, so teachers are made the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable, Iterator, Mapping
from typing import Callable, cast

import torch
from torch import nn

from transplant.architectures import TeacherSpecs
from transplant.metrics import evaluate
from transplant.spec.build import SpecModule, build_module
from transplant.tasks import get_task

Progress = Callable[[int, int, float], None]  # (step, total_steps, loss)


class TeacherNet(nn.Module):
    def __init__(self, specs: TeacherSpecs):
        super().__init__()
        self.specs = specs
        self.category = build_module(specs.category)
        self.tasks = nn.ModuleDict({task: build_module(spec) for task, spec in specs.tasks.items()})
        self.apply(init_weights)

    def forward(self, images: torch.Tensor, task: str) -> torch.Tensor:
        return self.tasks[task](self.category(images))

    def task_module(self, task: str) -> SpecModule:
        return cast(SpecModule, self.tasks[task])  # every task module is built from its spec


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Per-channel bilinear upsampling weights, FCN's initialisation of its transposed convs."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    for c in range(channels):
        weight[c, c] = ramp[:, None] * ramp[None, :]
    return weight


def init_weights(layer: nn.Module) -> None:
    """He init keeps the signal alive through a deep ReLU stack without batchnorm (VGG has none);
    transposed convs start as bilinear upsampling, as in FCN."""
    if isinstance(layer, nn.ConvTranspose2d) and layer.in_channels == layer.out_channels:
        with torch.no_grad():
            layer.weight.copy_(bilinear_kernel(layer.in_channels, layer.kernel_size[0]))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif isinstance(layer, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


@dataclass(frozen=True)
class TeacherTraining:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    seg_weight: float = 1.0
    cosine: bool = False  # decay lr to 0 along a cosine over the run (sharper final nets for the same steps)


def task_loss(task: str, output: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    """The task type's loss (binary cross-entropy on the single logit, per-pixel cross-entropy, ...)."""
    return get_task(task).loss(output, labels, masks)


def joint_loss(features: torch.Tensor, tasks: Mapping[str, nn.Module] | nn.ModuleDict, labels: torch.Tensor,
               masks: torch.Tensor | None, seg_weight: float) -> torch.Tensor:
    """The sum of every task module's loss on one category module's features (a teacher's training loss)."""
    loss = torch.zeros(())
    for task, module in tasks.items():
        kind = get_task(task)
        if kind.needs_masks and masks is None:
            continue  # a source without masks trains no mask head
        weight = seg_weight if kind.needs_masks else 1.0  # seg_weight: the mask heads' (segmentation)
        x, y, m = features, labels, masks
        keep = kind.keep(labels)  # e.g. segmentation: only the images that show the category
        if keep is not None:
            if not keep.any():
                continue
            x, y, m = features[keep], labels[keep], None if masks is None else masks[keep]
        loss = loss + weight * task_loss(task, module(x), y, m)
    return loss


def copy_matching(net: nn.Module, source: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy every parameter of `source` whose name and shape match one of `net`'s; the names copied.
    This is how VOC nets start from ImageNet's VGG-16: all but the layers whose shape differs."""
    own = net.state_dict()
    copied = [name for name, value in source.items() if name in own and own[name].shape == value.shape]
    net.load_state_dict({**own, **{name: source[name] for name in copied}})
    return copied


def lr_schedule(optimiser: torch.optim.Optimizer, config: TeacherTraining,
                total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if config.cosine:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)


def optimise(parameters: Iterable[nn.Parameter], losses: Iterator[torch.Tensor], total_steps: int,
             config: TeacherTraining, progress: Progress | None = None) -> None:
    """One Adam step (lr, weight decay and schedule from `config`) per batch loss that `losses` yields."""
    optimiser = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    lr_decay = lr_schedule(optimiser, config, total_steps)
    for step, loss in enumerate(losses, start=1):
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        lr_decay.step()
        if progress:
            progress(step, total_steps, float(loss.detach()))


def train_teacher(specs: TeacherSpecs, images: torch.Tensor, labels: torch.Tensor,
                  masks: torch.Tensor | None = None, config: TeacherTraining = TeacherTraining(),
                  progress: Progress | None = None, init: Mapping[str, torch.Tensor] | None = None) -> TeacherNet:
    """Train all task modules of a teacher jointly on its category module (Adam, cross-entropy).

    `init`: start from these weights where names and shapes agree (a shared pre-trained start), else He init."""
    torch.manual_seed(config.seed)
    net = TeacherNet(specs).train()
    if init is not None:
        copy_matching(net, init)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = max(1, -(-len(images) // config.batch_size))

    def losses() -> Iterator[torch.Tensor]:
        for _ in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), config.batch_size):
                idx = order[start:start + config.batch_size]
                yield joint_loss(net.category(images[idx]), net.tasks, labels[idx],
                                 None if masks is None else masks[idx], config.seg_weight)

    optimise(net.parameters(), losses(), config.epochs * steps_per_epoch, config, progress)
    return net.eval()


def evaluate_teacher(net: TeacherNet, images: torch.Tensor, labels: torch.Tensor,
                     masks: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """Metrics of every task, each on the images its task type is scored on (segmentation: positives)."""
    results = {}
    for task in net.tasks:
        kind = get_task(task)
        if kind.needs_masks and masks is None:
            continue
        keep = kind.keep(labels)
        if keep is None:
            results[task] = evaluate(lambda x: net(x, task), task, images, labels, masks)
        else:
            results[task] = evaluate(lambda x: net(x, task), task, images[keep], labels[keep],
                                     None if masks is None else masks[keep])
    return results


@torch.no_grad()
def feature_norm_mean(category_module: SpecModule, images: torch.Tensor, batch_size: int = 256) -> float:
    """E ||f(I)||_F over images: the statistic a site sends instead of its images (for beta)."""
    norms = [category_module(images[i:i + batch_size]).flatten(1).norm(dim=1)
             for i in range(0, len(images), batch_size)]
    return float(torch.cat(norms).mean())
