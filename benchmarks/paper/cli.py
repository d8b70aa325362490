"""The paper harness's command line: `python -m benchmarks.paper bench exp1|exp2|exp3|table4|all
[--seeds 3] [--quick]` and `python -m benchmarks.paper report`. Run from the repository root (the
harness is not part of the installed library)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from benchmarks.paper.settings import REGIMES

BENCH_HELP = """Reproduce the paper's experiments on data this project ships (nothing is downloaded).

  exp1    adapter inserted into the same teacher (digits), 1/3 conv layers, 0-100 samples
  exp2    category modules into the dog's classification module (shapes), 10-100 samples
  exp3    the same into the dog's segmentation module (pixel accuracy and object IoU)
  table4  into leave-one-out generic modules trained on similar + dissimilar categories
  all     all four

Every method (back_distill, direct_learn, distill, jacobian, lstsq) runs in every cell with the same
step budget. Teachers are cached under --cache. Writes <out>/paper.json (one row per run),
<out>/paper.md (tables next to the paper's numbers), <out>/paper_meta.json and PNG plots."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper",
                                     description="The paper's experiments on shipped data.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="reproduce the paper's experiments", description=BENCH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("experiments", nargs="+", choices=["exp1", "exp2", "exp3", "table4", "all"],
                   help="which experiments to run")
    b.add_argument("--seeds", type=int, default=None, help="number of seeds per cell (default 3; --quick: 1)")
    b.add_argument("--steps", type=int, default=None, help="Adam steps for every iterative method (default 200)")
    b.add_argument("--quick", action="store_true",
                   help="the fast subset (1 seed, 1 category per experiment, tiny teachers, few steps)")
    b.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    b.add_argument("--cache", type=Path, default=Path("benchmarks/cache"), help="teacher cache folder")
    b.add_argument("--iou-gate", type=float, default=None, help="minimum teacher object IoU in %% (default 60)")
    b.add_argument("--targets", type=_names, default=None, metavar="A,B",
                   help="shapes categories transplanted in Exp.2/3 and Table 4 (default cat,cow,horse,sheep)")
    b.add_argument("--samples", type=_counts, default=None, metavar="N,M",
                   help="labelled sample counts of Exp.2/3 (default 10,20,50,100; back-distill also runs with 0)")
    b.add_argument("--pretrain", type=int, default=None, metavar="N",
                   help="images of each shapes category in the shared pre-trained base (the role ImageNet plays "
                        "for the paper's nets; default 1000; 0: every net from scratch)")
    b.add_argument("--regime", choices=REGIMES, default="paper",
                   help="paper: classifiers 'category vs random images', every shapes net fine-tuned from one "
                        "shared base; hard: classifiers reject every other category; independent: every site's "
                        "net from its own random init (default: %(default)s)")
    b.add_argument("--train-images", type=int, default=None, metavar="N",
                   help="training images per shapes teacher (default 8000)")
    b.add_argument("--methods", type=_methods, default=None, metavar="A,B",
                   help="methods to run (default: all registered in the bench settings)")
    b.add_argument("--layers", type=_counts, default=None, metavar="N,M",
                   help="Exp.2 adapter depths (default 1,3)")
    b.add_argument("--workers", type=int, default=1,
                   help="run the experiments as this many parallel processes (one per core), then merge "
                        "(default 1; `make bench` uses 2)")
    b.add_argument("--resume", action="store_true",
                   help="keep the rows of an interrupted run in <out>/paper.partial.jsonl and run only the rest")
    b.add_argument("--below-gate", type=float, default=None,
                   help="rerun experiments with excluded teachers at this lower gate into <out>/below_gate "
                        "(default 30; a negative value turns the rerun off)")
    c = sub.add_parser("ceiling", help="what many labelled images buy each adapter shape (an estimate of its ceiling)",
                       description="Train each adapter shape (1-conv 1x1, 3-conv 1x1, 3-conv 3x3) with hybrid (the "
                                   "best data-free start, refined by the task loss) on many labelled images of each Exp.2/3 target: an estimate of how far any "
                                   "transplant method with that adapter shape can go. Writes <out>/ceiling.json and .md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--samples", type=int, default=2000, help="labelled images of the category")
    c.add_argument("--steps", type=int, default=600, help="Adam steps")
    c.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    c.add_argument("--seeds", type=int, default=1, help="seeds per cell")
    c.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    c.add_argument("--cache", type=Path, default=Path("benchmarks/cache"), help="teacher cache folder")
    r = sub.add_parser("report", help="merge several `bench` output folders into one report",
                       description="Merge paper.json / paper_meta.json of several bench runs (e.g. run as "
                                   "parallel processes) into one paper.json, paper.md and plots.")
    r.add_argument("inputs", nargs="+", type=Path, help="bench output folders")
    r.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = "python -m benchmarks.paper " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.command == "report":
        from benchmarks.paper.bench import merge

        merge(args.inputs, args.out, command)
        print(f"wrote {args.out / 'paper.json'}, {args.out / 'paper.md'}")
        return 0
    if args.command == "ceiling":
        from benchmarks.paper.ceiling import run_ceiling

        run_ceiling(args.out, args.cache, args.samples, args.steps, args.lr, args.seeds)
        print(f"wrote {args.out / 'ceiling.json'}, {args.out / 'ceiling.md'}")
        return 0
    from benchmarks.paper import FULL, QUICK, bench, bench_parallel, resolve

    experiments = resolve(args.experiments)
    if args.workers > 1 and len(experiments) > 1:
        meta = bench_parallel(experiments, args.out, args.workers, _child_args(args), command)
        print(f"wrote {args.out / 'paper.json'}, {args.out / 'paper.md'} in {meta['total_seconds']:.0f} s")
        return 0

    settings = QUICK if args.quick else FULL
    if args.seeds is not None:
        settings = settings.with_seeds(args.seeds)
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps, shapes_steps=args.steps)
    if args.below_gate is not None:
        settings = dataclasses.replace(settings, below_gate=None if args.below_gate < 0 else args.below_gate)
    if args.iou_gate is not None:
        settings = dataclasses.replace(settings, iou_gate=args.iou_gate)
    if args.targets is not None:
        settings = dataclasses.replace(settings, targets=args.targets, table4_targets=args.targets)
    if args.samples is not None:
        settings = dataclasses.replace(settings, samples=args.samples)
    if args.pretrain is not None:
        settings = dataclasses.replace(settings, pretrain_per_category=args.pretrain or None)
    if args.train_images is not None:
        settings = dataclasses.replace(settings, shapes_train=args.train_images)
    if args.methods is not None:  # back_distill_mean is the Exp.1 variant row, run only when named
        settings = dataclasses.replace(settings, methods=tuple(m for m in args.methods if m != "back_distill_mean"),
                                       mean_variant=("back_distill_mean",) if "back_distill_mean" in args.methods else ())
    if args.layers is not None:
        settings = dataclasses.replace(settings, exp2_layers=args.layers)
    settings = dataclasses.replace(settings, regime=args.regime)
    meta = bench(experiments, args.out, settings, args.cache, command, resume=args.resume)
    print(f"wrote {args.out / 'paper.json'}, {args.out / 'paper.md'} in {meta['total_seconds']:.0f} s")
    return 0


def _names(text: str) -> tuple[str, ...]:
    from transplant.data import SIMILAR

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SIMILAR]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"targets must be among {', '.join(SIMILAR)}; got {text!r}")
    return names


def _methods(text: str) -> tuple[str, ...]:
    from transplant.methods import METHODS

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METHODS and n != "back_distill_mean"]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"methods must be among {', '.join(sorted(METHODS))}; got {text!r}")
    return names


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(n) for n in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"samples must be positive integers like 10,50; got {text!r}")
    return counts


def _child_args(args: argparse.Namespace) -> list[str]:
    """The options a parallel worker inherits (everything but the experiments, --out and --workers)."""
    child = ["--cache", str(args.cache)]
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--iou-gate", args.iou_gate),
                        ("--below-gate", args.below_gate), ("--pretrain", args.pretrain),
                        ("--targets", args.targets and ",".join(args.targets)),
                        ("--samples", args.samples and ",".join(map(str, args.samples))),
                        ("--regime", args.regime), ("--train-images", args.train_images),
                        ("--methods", args.methods and ",".join(args.methods)),
                        ("--layers", args.layers and ",".join(map(str, args.layers)))):
        if value is not None:
            child += [flag, str(value)]
    return child + ["--quick"] * args.quick + ["--resume"] * args.resume


if __name__ == "__main__":
    sys.exit(main())
