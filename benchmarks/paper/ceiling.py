"""What many labels buy each adapter shape in the dog's task modules: an estimate of how far it can go.

`python -m benchmarks.paper ceiling` trains each adapter shape on many labelled images of the category
(2000 by default, far more than any few-shot cell) and reports it against the teachers. The method is
hybrid: the best data-free start refined by the task loss, so the figure is at least as good as the
data-free methods get on the training images (direct_learn from a random start, 600 steps, ended
below probe stitching for the cow: 8.5 vs 5.75 % error).
It is not a transplant method (it reads labels the coordinator never has): where even this stays far
from the teacher, the gap is the frozen task module's and the adapter shape's, not the method's. It is
an estimate, not a strict bound: the task loss on training images is not the test metric (in Exp.3 it
can end below data-free probe stitching's object IoU). Writes <out>/ceiling.json and <out>/ceiling.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.paper.cases import CASES, Context
from benchmarks.paper.runner import _samples
from benchmarks.paper.settings import FULL, Settings
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import DistillSettings
from transplant.tasks import get_task
from transplant.trainer import evaluate_adapter

SHAPES = ((1, 1), (3, 1), (3, 3))   # (conv layers, kernel): the paper's two 1x1 adapters and a 3x3 one
METHOD = "hybrid"
PRIMARY = {"classification": "error_rate", "segmentation": "iou"}


def ceiling_rows(settings: Settings, cache: Path, samples: int, steps: int, lr: float) -> list[dict]:
    ctx = Context(settings, cache, log=lambda message: None)
    rows = []
    for experiment in ("exp2", "exp3"):
        for case in CASES[experiment](ctx):
            metric = PRIMARY[case.task]
            for layers, kernel in SHAPES:
                for seed in settings.seeds:
                    config = JobConfig.create(task=case.task, method=METHOD, adapter_layers=layers,
                                              kernel_size=kernel, reorder=case.reorder, steps=steps, lr=lr,
                                              seed=seed, distill=DistillSettings(g_mode=case.g_mode))
                    problem = make_problem(config, case.category_module, case.teacher_task, case.generic_task,
                                           case.beta, _samples(case, samples, seed), case.generic_category_module,
                                           same_net=False)
                    start = time.perf_counter()
                    found = evaluate_adapter(problem, run_job(config, problem).adapter, case.test.images,
                                             case.test.labels,
                                             case.test.masks if get_task(case.task).needs_masks else None)
                    rows.append({"experiment": experiment, "category": case.category, "adapter_layers": layers,
                                 "kernel_size": kernel, "samples": samples, "seed": seed, "metric": metric,
                                 "value": float(found[metric]), "regime": settings.regime,
                                 "teacher_value": float(case.teacher_metrics[case.task][metric]),
                                 "seconds": time.perf_counter() - start})
                    print(f"{experiment} {case.category} {layers}-conv {kernel}x{kernel}: {metric} "
                          f"{found[metric]:.2f} (teacher {rows[-1]['teacher_value']:.2f})", flush=True)
    return rows


def ceiling_markdown(rows: list[dict], samples: int, steps: int) -> str:
    lines = [f"# What {samples} labelled images buy each adapter shape ({METHOD}, {steps} steps)", "",
             "Not a method: the coordinator never has these labels. Where even this stays far from the teacher, "
             "the gap belongs to the frozen task module and the adapter shape, not to the method. An estimate, "
             "not a strict bound: the task loss on training images is not the test metric.", "",
             "| experiment | metric | category | adapter | with many labels | teacher | gap (points) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["experiment"], r["category"], r["adapter_layers"], r["kernel_size"]) for r in rows})
    for experiment, category, layers, kernel in keys:
        cell = [r for r in rows if (r["experiment"], r["category"], r["adapter_layers"], r["kernel_size"])
                == (experiment, category, layers, kernel)]
        value, teacher, gap = _mean_gap(cell)
        lines.append(f"| {experiment} | {cell[0]['metric']} | {category} | {layers}-conv {kernel}x{kernel} | {value:.2f} | "
                     f"{teacher:.2f} | {gap:+.2f} |")
    lines += ["", "| experiment | adapter | Avg. with many labels | Avg. teacher | gap (points) |", "|---|---|---|---|---|"]
    for experiment, layers, kernel in sorted({(r["experiment"], r["adapter_layers"], r["kernel_size"]) for r in rows}):
        cell = [r for r in rows if (r["experiment"], r["adapter_layers"], r["kernel_size"]) == (experiment, layers, kernel)]
        value, teacher, gap = _mean_gap(cell)
        lines.append(f"| {experiment} | {layers}-conv {kernel}x{kernel} | {value:.2f} | {teacher:.2f} | {gap:+.2f} |")
    return "\n".join(lines) + "\n"


def _mean_gap(cell: list[dict]) -> tuple[float, float, float]:
    """(mean value, mean teacher value, points behind the teacher) of a cell's rows (one metric)."""
    value = sum(r["value"] for r in cell) / len(cell)
    teacher = sum(r["teacher_value"] for r in cell) / len(cell)
    return value, teacher, value - teacher if cell[0]["metric"] == "error_rate" else teacher - value


def run_ceiling(out: Path, cache: Path, samples: int = 2000, steps: int = 600, lr: float = 3e-3,
                seeds: int = 1, settings: Settings = FULL) -> None:
    settings = settings.with_seeds(seeds)
    rows = ceiling_rows(settings, cache, samples, steps, lr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ceiling.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "ceiling.md").write_text(ceiling_markdown(rows, samples, steps))
