"""Is back-distillation's objective aligned with quality across nets? Evidence for the README.

For each target of Exp.2 (paper regime, cached teachers), the distillation objective
lambda * ||alpha h'(B_S(G)) - B_T(G)||^2 (mean over one fixed pool of 512 draws) and the test error of
four adapters: the identity (beta-only) adapter, weight matching's (which undoes the reorder),
probe stitching's, and the one back-distillation found. If back-distill's adapter has the lowest
objective but not the lowest error, the objective does not measure what matters.

    python -m benchmarks.objective [--out benchmarks/results/objective.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from benchmarks.paper.cases import Context, exp2_cases
from benchmarks.paper.settings import FULL
from transplant.job import JobConfig, make_problem, run_job
from transplant.methods import DistillSettings
from transplant.methods.back_distill import distill_term
from transplant.methods.draws import PseudoGradientPool
from transplant.trainer import evaluate_adapter


def measure(case, layers: int, seed: int) -> list[dict]:
    settings = DistillSettings(g_mode="enlarged")
    config = JobConfig.create(task=case.task, adapter_layers=layers, reorder=True, steps=200, seed=seed, distill=settings)
    problem = make_problem(config, case.category_module, case.teacher_task, case.generic_task, case.beta, None,
                           case.generic_category_module, same_net=False)
    pool = PseudoGradientPool(problem.teacher_task, problem.student_task, problem.task, settings,
                              torch.Generator().manual_seed(1000 + seed))
    out = []
    for method in ("identity", "weight_match", "probe_stitch", "back_distill"):
        adapter = run_job(config.with_method(method), problem).adapter
        with torch.no_grad():
            objective = float(distill_term(adapter, pool, pool.student_grads, pool.teacher_grads))
        error = evaluate_adapter(problem, adapter, case.test.images, case.test.labels)["error_rate"]
        out.append({"category": case.category, "layers": layers, "seed": seed, "method": method,
                    "objective": objective, "error_rate": error})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/objective.json"))
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/cache"))
    parser.add_argument("--train-images", type=int, default=4000, help="as the committed bench run (default 4000)")
    parser.add_argument("--targets", default="cat,cow,horse,sheep")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    settings = dataclasses.replace(FULL, shapes_train=args.train_images, targets=tuple(args.targets.split(",")))
    rows = []
    for case in exp2_cases(Context(settings, args.cache, log=lambda _: None)):
        for layers in (1, 3):
            for seed in range(args.seeds):
                rows += measure(case, layers, seed)
                for r in rows[-4:]:
                    print(f"{r['category']:6} {r['layers']}-conv seed {r['seed']} {r['method']:13} "
                          f"objective {r['objective']:12.1f}  error {r['error_rate']:5.2f} %")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
