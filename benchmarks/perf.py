"""`make bench-perf`: speed figures, each a ratio or figure measured in one run on this machine.

Writes benchmarks/results/perf.json. Run `python -m benchmarks.perf --help` for the options.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from transplant.adapter import Adapter
from transplant.architectures import CLASSIFICATION, teacher_specs, vgg_small
from transplant.data.digits import load_digits_category
from transplant.job import JobConfig, make_problem
from transplant.methods import Samples, TrainConfig, get_method
from transplant.methods.back_distill import distill_term
from transplant.methods.reference import naive_distill_loss
from transplant.runtime import configure_threads
from transplant.teacher import TeacherTraining, train_teacher
from transplant.trainer import evaluate_adapter, train_adapter

RESULTS = Path(__file__).parent / "results"


def time_per_call(fn: Callable[[], None], repeats: int, warmup: int = 3) -> float:
    """Median seconds per call (the median resists a loaded machine's hiccups)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def digits_teacher(category: int, size: int, width: int):
    data = load_digits_category(category, seed=0, size=size)
    cfg = vgg_small(width=width, depth=4, image_size=size, in_channels=1)
    net = train_teacher(teacher_specs(cfg, (CLASSIFICATION,)), data.train.images, data.train.labels,
                        config=TeacherTraining(epochs=20))
    return net, data


def step_ratios(net, data, repeats: int) -> dict[str, float]:
    """One back-distill step vs one direct-learn step (same adapter, same 64 samples), and the
    double-backward reference vs the fast path (same draws)."""
    task = net.task_module(CLASSIFICATION)
    subset = data.train.subset(64, seed=0)
    config = JobConfig.create(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True)
    problem = make_problem(config, net.category, task, task, 1.0, Samples(subset.images, subset.labels))
    generator = torch.Generator().manual_seed(0)
    train = TrainConfig(method="back_distill", solver="iterative")
    methods = {name: get_method(name)(problem, TrainConfig(method=name, solver="iterative"), generator)
               for name in ("back_distill", "direct_learn")}
    adapter = Adapter(problem.adapter_config)
    optimiser = torch.optim.Adam(adapter.parameters())

    def step(method) -> Callable[[], None]:
        def run() -> None:
            loss, _ = method.loss(adapter)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return run

    backdistill = time_per_call(step(methods["back_distill"]), repeats)
    direct = time_per_call(step(methods["direct_learn"]), repeats)
    pool = methods["back_distill"].pool
    draws = train.distill.draws_per_step
    x_shape = tuple(pool.student_grads.shape[1:])

    def fast() -> None:
        idx = torch.randint(len(pool.G), (draws,), generator=generator)
        distill_term(adapter, pool, pool.student_grads[idx], pool.teacher_grads[idx]).backward()

    def naive() -> None:
        idx = torch.randint(len(pool.G), (draws,), generator=generator)
        masks = {k: v[idx] for k, v in pool.masks.items()}
        naive_distill_loss(adapter, pool.student, pool.teacher, pool.G[idx], masks, pool.alpha, pool.lam,
                           x_shape).backward()

    return {
        "backdistill_step_s": backdistill, "directlearn_step_s": direct,
        "backdistill_step_over_directlearn_step": backdistill / direct,
        "fast_distill_step_s": time_per_call(fast, repeats), "naive_distill_step_s": time_per_call(naive, repeats),
    }


def solver_comparison(categories: list[int], size: int, width: int, steps: int) -> dict[str, float]:
    """Exp.1 data-free, 1-conv 3x3 adapter with reorder: iterative training vs the one-shot solve."""
    errors = {"iterative": [], "lstsq": []}
    seconds = {"iterative": [], "lstsq": []}
    for category in categories:
        net, data = digits_teacher(category, size, width)
        task = net.task_module(CLASSIFICATION)
        config = JobConfig.create(task=CLASSIFICATION, adapter_layers=1, kernel_size=3, reorder=True)
        problem = make_problem(config, net.category, task, task, 1.0)
        for solver in errors:
            result = train_adapter(problem, TrainConfig(steps=steps, solver=solver))
            seconds[solver].append(result.seconds)
            errors[solver].append(evaluate_adapter(problem, result.adapter, data.test.images,
                                                   data.test.labels)["error_rate"])
    mean = statistics.fmean
    return {
        "lstsq_speedup": sum(seconds["iterative"]) / sum(seconds["lstsq"]),
        "lstsq_error_gap_points": mean(errors["lstsq"]) - mean(errors["iterative"]),
        "iterative_error_mean": mean(errors["iterative"]), "lstsq_error_mean": mean(errors["lstsq"]),
        "iterative_seconds_mean": mean(seconds["iterative"]), "lstsq_seconds_mean": mean(seconds["lstsq"]),
    }


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s))"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / "perf.json", help="where to write the figures")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per step measurement")
    parser.add_argument("--categories", type=int, nargs="+", default=[0, 3, 5, 8, 9], help="digits for Exp.1")
    parser.add_argument("--steps", type=int, default=600, help="iterative training steps")
    parser.add_argument("--quick", action="store_true", help="one category, few repeats (a smoke run)")
    parser.add_argument("--skip-system", action="store_true", help="skip the transfer and scaling figures")
    args = parser.parse_args(argv)
    configure_threads()
    if args.quick:
        args.categories, args.repeats, args.steps = args.categories[:1], 5, 100
    figures: dict[str, object] = {"device": device_name()}
    net, data = digits_teacher(args.categories[0], 16, 16)
    figures.update(step_ratios(net, data, args.repeats))
    figures["naive_step_over_fast_step"] = figures["naive_distill_step_s"] / figures["fast_distill_step_s"]
    figures.update(solver_comparison(args.categories, 16, 16, args.steps))
    if not args.skip_system:
        from benchmarks.perf_system import system_figures

        figures.update(system_figures(quick=args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(args.out.read_text()) if args.out.exists() else {}  # e.g. benchmarks.perf_inference's
    args.out.write_text(json.dumps({**kept, **figures}, indent=2, sort_keys=True) + "\n")
    for key in sorted(figures):
        print(f"{key:45s} {figures[key]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
