"""Learn an adapter with any registered method; deterministic in the seed, with progress callbacks."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from transplant.adapter import Adapter
from transplant.methods import Samples, TrainConfig, TransplantProblem, get_method
from transplant.methods.base import Progress
from transplant.metrics import evaluate


class Cancelled(RuntimeError):
    """The caller asked the training to stop."""


@dataclass
class TrainResult:
    adapter: Adapter
    method: str
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one entry every `log_every` steps
    alpha: float | None = None
    lam: float | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_device(problem: TransplantProblem, device: torch.device) -> TransplantProblem:
    """The problem with its (frozen) modules moved in place and its samples copied to `device`."""
    for module in (problem.category_module, problem.teacher_task, problem.student_task,
                   problem.generic_category_module):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    samples = problem.samples
    if samples is not None:
        samples = Samples(samples.images.to(device), samples.labels.to(device),
                          None if samples.masks is None else samples.masks.to(device))
    return dataclasses.replace(problem, samples=samples)


def train_adapter(problem: TransplantProblem, config: TrainConfig = TrainConfig(),
                  progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                  log_every: int = 10, device: torch.device | str | None = None) -> TrainResult:
    """Only the adapter's parameters are optimised; f, g_S and g_T stay frozen (checked).

    Runs on `device` (default: CUDA when available); random draws are made on the CPU from the seed,
    so a job gives the same draws wherever it runs. The adapter is returned on the CPU.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(device) if device is not None else default_device()
    problem = on_device(problem, device)
    adapter = Adapter(problem.adapter_config, torch.Generator().manual_seed(config.seed)).to(device)
    start = time.perf_counter()
    method = get_method(config.method)(problem, config, generator)
    history: list[dict[str, float]] = []
    if not method.iterative:
        method.solve(adapter)
        steps = 0
    else:
        steps = _iterate(method, adapter, config, progress, should_stop, history, log_every)
    pool = getattr(method, "pool", None)
    return TrainResult(adapter.cpu().eval(), config.method, steps, time.perf_counter() - start, history,
                       getattr(pool, "alpha", None), getattr(pool, "lam", None))


def _iterate(method, adapter: Adapter, config: TrainConfig, progress: Progress | None,
             should_stop: Callable[[], bool] | None, history: list[dict[str, float]], log_every: int) -> int:
    method.warm_start(adapter)
    optimiser = torch.optim.Adam(adapter.parameters(), lr=config.lr)
    adapter.train()
    for step in range(1, config.steps + 1):
        if should_stop is not None and should_stop():
            raise Cancelled(f"stopped at step {step} of {config.steps}")
        loss, parts = method.loss(adapter)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        parts = {"loss": float(loss.detach()), **parts}
        if step % log_every == 0 or step == config.steps:
            history.append({"step": step, **parts})
        if progress is not None:
            progress(step, config.steps, parts)
    return config.steps


def evaluate_adapter(problem: TransplantProblem, adapter: Adapter, images: torch.Tensor, labels: torch.Tensor,
                     masks: torch.Tensor | None = None) -> dict[str, float]:
    """The transplanted path g_S(h(f(I))) on a test split."""
    device = next(problem.student_task.parameters()).device
    adapter.to(device).eval()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return problem.student_task(adapter(problem.category_module(x)))

    return evaluate(forward, problem.task, images, labels, masks, device=device)
