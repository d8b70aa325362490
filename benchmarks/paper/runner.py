"""Run every method in every cell of each experiment's cases (cases.py).

A row per run: {"experiment", "category", "adapter_layers", "samples", "method", "metric", "value",
"seed", "teacher_value"}. Per-run extras (alpha, lambda, seconds, final losses) go to the meta file.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.paper.cases import CASES, Case, Context
from benchmarks.paper.settings import Settings
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import METHODS, DistillSettings, Samples
from transplant.methods.stitching import permutation_recovery
from transplant.spec.build import SpecModule
from transplant.spec.fullyconv import enlarged_input_shape, fully_convolutional
from transplant.tasks import SEGMENTATION, get_task
from transplant.trainer import evaluate_adapter

ENLARGED_SIZE = DistillSettings().enlarged_size


def _jobs(case: Case, s: Settings) -> list[tuple[int, int, str, int]]:
    jobs = []
    methods = s.methods + (s.mean_variant if case.experiment in s.mean_variant_experiments else ())
    for layers in case.layers:
        for n in case.samples:
            for method in methods:
                core = METHODS[method_settings(case, method)[0]]
                if (n == 0 and core.needs_samples) or (n > 0 and not core.uses_samples):
                    continue  # a method that ignores samples runs once, at 0
                for seed in s.seeds:
                    jobs.append((layers, n, method, seed))
    return jobs


def pseudo_gradient_numel(case: Case) -> int:
    """Elements of one D' (at x, or at the enlarged input for the enlarged G)."""
    shape = case.teacher_task.spec.input_shape
    if case.g_mode == "enlarged":
        shape = enlarged_input_shape(fully_convolutional(case.teacher_task.spec), ENLARGED_SIZE)
    return int(np.prod(shape))


def method_settings(case: Case, method: str) -> tuple[str, float | None]:
    """(core method, lambda_scale). `back_distill` is the core's loss, the paper's lambda * ||alpha D'_S - D'_T||^2
    with the squared norm summed over D's elements and lambda = 10 (1 for segmentation) / E|D'_T|.
    `back_distill_mean` averages over elements instead (lambda smaller by the element count), a labelled variant."""
    base = get_task(case.task).lambda_scale
    if method == "back_distill_mean":
        return "back_distill", base / pseudo_gradient_numel(case)
    return method, None


def _samples(case: Case, n: int, seed: int) -> Samples | None:
    if n == 0:
        return None
    sub = case.train.subset(n, seed)
    return Samples(sub.images, sub.labels, sub.masks if get_task(case.task).needs_masks else None)


def _feature_node(module: SpecModule, task: str) -> str:
    if task == SEGMENTATION:
        return "score_fr"
    return module.spec.node(module.spec.output).inputs[0]  # the fc layer before the output


@torch.no_grad()
def _features(case: Case, forward_x: Callable[[torch.Tensor], torch.Tensor], module: SpecModule,
              n: int = 200) -> np.ndarray:
    images = case.test.images[:n]
    values = module.run(forward_x(case.category_module(images)))
    return values[_feature_node(module, case.task)].flatten(1).numpy()


def run_case(ctx: Context, case: Case, bar: tqdm) -> None:
    s = ctx.settings
    metrics = tuple(m.name for m in get_task(case.task).metrics)
    teacher_task_metrics = case.teacher_metrics[case.task]
    for layers, n, method, seed in _jobs(case, s):
        if (case.experiment, case.category, layers, n, method, seed) in ctx.done:
            bar.update(1)
            continue
        bar.set_postfix_str(f"{case.experiment} {case.category} {layers}c n={n} {method} s{seed}")
        core_method, lambda_scale = method_settings(case, method)
        config = JobConfig.create(task=case.task, method=core_method, adapter_layers=layers, kernel_size=case.kernel_size,
                           reorder=case.reorder, steps=s.steps if case.experiment == "exp1" else s.shapes_steps,
                           lr=s.lr, seed=seed,
                           distill=DistillSettings(g_mode=case.g_mode, lambda_scale=lambda_scale))
        problem = make_problem(config, case.category_module, case.teacher_task, case.generic_task, case.beta,
                               _samples(case, n, seed), case.generic_category_module,
                               same_net=case.experiment == "exp1")
        start = time.perf_counter()
        result = run_job(config, problem)
        seconds = time.perf_counter() - start
        found = evaluate_adapter(problem, result.adapter, case.test.images, case.test.labels,
                                 case.test.masks if get_task(case.task).needs_masks else None)
        for metric in metrics:
            ctx.rows.append({"experiment": case.experiment, "category": case.category, "adapter_layers": layers,
                             "samples": n, "method": method, "metric": metric, "value": float(found[metric]),
                             "seed": seed, "teacher_value": float(teacher_task_metrics[metric]),
                             "regime": s.regime, "perm_recovery": permutation_recovery(result.adapter)})
        if ctx.partial is not None:
            with ctx.partial.open("a") as fh:
                for row in ctx.rows[-len(metrics):]:
                    fh.write(json.dumps(row) + "\n")
        last = result.history[-1] if result.history else {}
        first = result.history[0] if result.history else {}
        ctx.runs.append({"experiment": case.experiment, "category": case.category, "task": case.task,
                         "adapter_layers": layers, "samples": n, "method": method, "seed": seed,
                         "seconds": seconds, "alpha": result.alpha, "lambda": result.lam, "beta": case.beta,
                         "first": first, "last": last, **{m: found[m] for m in metrics}})
        if seed == s.seeds[0] and n == s.pca_samples and method in ("back_distill", "direct_learn") \
                and layers == max(case.layers):
            store = ctx.pca.setdefault((case.experiment, case.category, case.task), {})
            if "teacher" not in store:
                store["teacher"] = _features(case, lambda x: x, case.teacher_task)
            store[method] = _features(case, result.adapter, case.generic_task)
        bar.update(1)


def run_experiments(ctx: Context, experiments: tuple[str, ...]) -> None:
    timings = ctx.meta.setdefault("seconds", {})
    for name in experiments:
        start = time.perf_counter()
        ctx.log(f"[{name}] teachers ...")
        cases = CASES[name](ctx)
        total = sum(len(_jobs(c, ctx.settings)) for c in cases)
        with tqdm(total=total, desc=f"{name} runs", position=0, dynamic_ncols=True) as bar:
            for case in cases:
                run_case(ctx, case, bar)
        timings[name] = time.perf_counter() - start
        ctx.log(f"[{name}] done in {timings[name]:.0f} s ({total} runs)")
