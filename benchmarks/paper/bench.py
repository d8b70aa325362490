"""`python -m benchmarks.paper bench`: teachers (cached), every method in every cell, rows, report and plots."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.paper.report import plot_curves, plot_pca, save_json, write_report
from benchmarks.paper.cases import Context
from benchmarks.paper.runner import run_experiments
from benchmarks.paper.settings import EXPERIMENTS, FULL, QUICK, Settings
from transplant.runtime import configure_threads

CHOICES = [
    "Teachers are trained by `transplant.teacher.train_teacher` (the site agent's code), once per category "
    "with teacher seed {teacher_seed}; the seeds of a cell vary the few-shot samples (`Split.subset(n, seed)`, "
    "nested in n), the adapter's initialisation, the channel permutation (Exp.1) and the draws of G.",
    "Exp.1: scikit-learn digits at {digits_size}x{digits_size}, `vgg_small(width={digits_width}, depth=4)`, "
    "binary 'this digit vs random other digits', balanced test sets; categories {digits_categories}. The adapter "
    "(3x3 convs, channel reorder) sits between the teacher's own category and classification modules, beta = 1; "
    "G = 1 with dummy_2nd masks (20% ones) at every task-module ReLU (paper Exp.1).",
    "Exp.2/3 and Table 4: procedural shapes at {shapes_size}x{shapes_size} RGB, `vgg_small(width={shapes_width}, "
    "depth={shapes_depth})` without dropout, {shapes_train} training images per teacher ({shapes_teacher_epochs} "
    "epochs, batch {shapes_teacher_batch}, Adam at lr {shapes_teacher_lr} with a cosine decay, segmentation loss "
    "weight {shapes_teacher_seg_weight}, when trained from scratch), {shapes_test} test images (half the "
    "category, half negatives). Negatives (regime {regime}): {negatives_text}. Every teacher has both task "
    "modules on one category module. The generic net is the {generic}'s (paper's choice); targets {targets}.",
    "Exp.2: {exp2_layers}-conv 1x1 adapters, 'enlarged' G (the classifier run fully convolutionally, G ~ U[-1,1]^(7x7)), "
    "dummy_2nd with one shared 2-D mask x' (20% ones) at the lowest task-module ReLU, dummy_1st elsewhere; "
    "lambda = 10/E|D'_T|. Exp.3: 1-conv 1x1 adapter, G ~ U[-1,1] per output pixel, dummy_1st everywhere, "
    "lambda = 1/E|D'_T|. alpha = E||D'_T|| / E||D'_S0|| as implemented in `transplant.methods.draws`.",
    "beta = E||f_S(I)||_F / E||f(I)||_F from `feature_norm_mean` on 256 training images of each net's own "
    "category (for a leave-one-out net: the mean over its category modules).",
    "Segmentation: few-shot samples and test images are the object images of each split (the paper's FCNs "
    "segment images of their category); classification samples are balanced (category / others).",
    "Step budget: {steps} Adam steps (Exp.1) and {shapes_steps} (shapes), lr {lr}, batch = all samples (<= 64), for "
    "every iterative method alike; nothing was tuned per method. back_distill uses the paper's loss "
    "lambda * ||alpha D'_S - D'_T||^2 with the squared norm summed over D's elements (the core's distill_term, "
    "lambda = 10 or 1 / E|D'_T|); back_distill_mean averages over elements instead (a lambda smaller by the "
    "element count), shown as a variant in {mean_variant_experiments}.",
    "Baselines: direct-learn (task loss), distill (task loss + cross-entropy to the teacher's outputs), "
    "jacobian (task loss + normalised real-gradient Jacobian matching, Srinivas & Fleuret), lstsq (closed-form "
    "1x1 stitching h(f(I)) ~ f_S(I) on the sample images, f_S = the generic net's {generic} category module; in "
    "Exp.1 f_S = f itself, which makes it an oracle-like baseline there). Methods beyond the paper: probe_stitch "
    "(the same least squares on 512 procedural probe images the coordinator owns: textures, shapes, noise; "
    "data-free), weight_match (the channel permutation recovered from the two category modules' weights alone by "
    "layer-wise linear assignment, plus a per-channel scale; data-free), probe_distill (the teacher's answers distilled "
    "through the generic task module on the probes and on probes the teacher itself turned into its category by "
    "gradient steps on the pixels; data-free), hybrid (the data-free solution closest "
    "to f_S on the sample images, refined by the task loss) and the identity (beta-only) adapter as a control. "
    "Data-free methods that ignore samples (probe_stitch, weight_match, probe_distill, identity) run once, at 0 samples; "
    "back-distill runs with 0 and with samples; Table 3/4 in the paper have no 0-sample rows.",
    "Table 4: targets {table4_targets}; per target, a 'leave-one-out' net with one category module per member category (all similar + "
    "dissimilar categories except the target, {loo_train_per_category} images each, negatives = other members) "
    "and shared classification + segmentation modules, trained jointly ({loo_epochs} epochs, batches drawn "
    "round-robin over categories, the same recipe and loss as the shapes teachers): the paper's multi-category transplant net. Classification: 3-conv enlarged; "
    "segmentation: 1-conv uniform. The lstsq baseline stitches to its dog category module.",
    "Fig.5-style PCA: last hidden fc layer (classification) or score_fr (segmentation) of the transplanted net on "
    "200 test images, seed 0, {pca_samples} samples, deepest adapter of the experiment; the teacher's own "
    "features in grey.",
]


PRETRAINED = (
    "**Shared pre-trained start.** Every shapes net (teachers, generic and leave-one-out nets) starts from one "
    "base trained on {pretrain_per_category} images of each of the 9 shapes categories ({pretrain_epochs} epochs, "
    "9-way classification + object/background segmentation), as the paper's VOC nets start from ImageNet's "
    "VGG-16; teachers are then fine-tuned at lr {finetune_lr} for {finetune_epochs} epochs (leave-one-out nets "
    "for {loo_epochs}), all layers but the classifier's last one copied from the base.")


NEGATIVES_TEXT = {
    "paper": "'category vs random images' as in the paper: the dissimilar categories and plain textured "
             "backgrounds, never another mammal",
    "hard": "every other category, the other mammals included",
    "independent": "'category vs random images' (dissimilar categories and backgrounds); every site's net from its "
                   "own random initialisation (seed 1 + category index), no shared base",
}


def choices(fields: dict) -> list[str]:
    fields = {**fields, "negatives_text": NEGATIVES_TEXT.get(fields.get("regime", "paper"), ""),
              "exp2_layers": "/".join(map(str, fields.get("exp2_layers", (3,))))}
    lines = [c.format(**fields) for c in CHOICES]
    if fields.get("pretrain_per_category") and fields.get("regime") != "independent":
        lines.append(PRETRAINED.format(**fields))
    return lines


def bench(experiments: tuple[str, ...], out: Path, settings: Settings = FULL, cache: Path | None = None,
          command: str = "", resume: bool = False) -> dict:
    configure_threads()
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or Path("benchmarks/cache")
    fields = dataclasses.asdict(settings)
    meta = {"settings": fields, "command": command, "choices": choices(fields)}
    ctx = Context(settings, cache, meta, partial=out / "paper.partial.jsonl")
    if resume and ctx.partial.exists():  # keep the rows of an interrupted run, run only what is missing
        ctx.rows = [json.loads(line) for line in ctx.partial.read_text().splitlines() if line.strip()]
        ctx.rows = [r for r in ctx.rows if r["experiment"] in experiments]
        ctx.done = {(r["experiment"], r["category"], r["adapter_layers"], r["samples"], r["method"], r["seed"])
                    for r in ctx.rows}
        ctx.partial.write_text("".join(json.dumps(r) + "\n" for r in ctx.rows))
        meta["resumed_rows"] = len(ctx.rows)  # their time, per-run diagnostics and PCA stayed with the interrupted run
    else:
        ctx.partial.write_text("")
    start = time.perf_counter()
    run_experiments(ctx, experiments)
    meta["total_seconds"] = time.perf_counter() - start
    excluded = [e for e in experiments if e in {x["experiment"] for x in meta.get("excluded", [])}]
    if settings.below_gate is not None and excluded:
        below = dataclasses.replace(settings, iou_gate=settings.below_gate, below_gate=None)
        sub = bench(tuple(excluded), out / "below_gate", below, cache, f"{command} [rerun of {', '.join(excluded)} "
                    f"with the gate at {settings.below_gate}%]")
        meta["below_gate"] = {"folder": "below_gate", "gate": settings.below_gate, "experiments": excluded,
                              "seconds": sub["total_seconds"]}
        meta["total_seconds"] = time.perf_counter() - start
    meta["runs"] = ctx.runs
    meta["sanity"] = sanity_lines(ctx.runs)
    save_json(out, ctx.rows, meta)
    ctx.partial.unlink(missing_ok=True)
    plot_curves(out, ctx.rows, meta.get("background_pixel_accuracy"))
    plot_pca(out, ctx.pca)
    write_report(out, ctx.rows, meta)
    return meta


def sanity_lines(runs: list[dict]) -> list[str]:
    """alpha / lambda ranges and whether the jacobian baseline's loss moved (non-zero gradients)."""
    import numpy as np

    lines = []
    for exp in sorted({r["experiment"] for r in runs}):
        bd = [r for r in runs if r["experiment"] == exp and r["method"] == "back_distill"]
        if bd:
            alphas = [r["alpha"] for r in bd if r["alpha"] is not None]
            lams = [r["lambda"] for r in bd if r["lambda"] is not None]
            d0 = [r["first"].get("distill_loss") for r in bd if r["first"].get("distill_loss") is not None]
            d1 = [r["last"].get("distill_loss") for r in bd if r["last"].get("distill_loss") is not None]
            lines.append(f"{exp}: back-distill alpha in [{min(alphas):.3g}, {max(alphas):.3g}], lambda in "
                         f"[{min(lams):.3g}, {max(lams):.3g}], distill loss (step 10 -> last) median "
                         f"{np.median(d0):.3g} -> {np.median(d1):.3g}")
        jac = [r for r in runs if r["experiment"] == exp and r["method"] == "jacobian"]
        if jac:
            j0 = [r["first"].get("distill_loss", 0.0) for r in jac]
            j1 = [r["last"].get("distill_loss", 0.0) for r in jac]
            lines.append(f"{exp}: jacobian matching loss (step 10 -> last) median {np.median(j0):.3g} -> "
                         f"{np.median(j1):.3g} (a loss that moves means non-zero gradients reach the adapter)")
    return lines


def merge(inputs: list[Path], out: Path, command: str = "", wall_seconds: float | None = None) -> dict:
    """One report from several `bench` output folders (e.g. experiments run as separate processes).
    Their below_gate/ reruns are merged into <out>/below_gate the same way. PNGs already in <out> are
    removed first: they are an earlier report's, and the report lists every plot it finds there."""
    rows: list[dict] = []
    meta: dict = {}
    if out.resolve() not in {f.resolve() for f in inputs}:  # plots of an earlier report would be listed as this one's
        for stale in out.glob("*.png"):
            stale.unlink()
    for folder in inputs:
        rows += json.loads((folder / "paper.json").read_text())
        m = json.loads((folder / "paper_meta.json").read_text())
        if not meta:
            meta = {**m, "teachers": {}, "excluded": [], "background_pixel_accuracy": {}, "seconds": {},
                    "runs": [], "total_seconds": 0.0, "resumed_rows": 0}
            meta.pop("below_gate", None)
        meta["settings"].update(m.get("settings", {}))  # later folders win (order the inputs accordingly)
        meta["teachers"].update(m.get("teachers", {}))
        for experiment, tasks in m.get("controls", {}).items():
            for task, cats in tasks.items():
                meta.setdefault("controls", {}).setdefault(experiment, {}).setdefault(task, {}).update(cats)
        meta["excluded"] += m.get("excluded", [])
        meta["background_pixel_accuracy"].update(m.get("background_pixel_accuracy", {}))
        for experiment, seconds in m.get("seconds", {}).items():  # one experiment split by targets: its parts add up
            meta["seconds"][experiment] = meta["seconds"].get(experiment, 0.0) + seconds
        meta["runs"] += m.get("runs", [])
        meta["total_seconds"] += m.get("total_seconds", 0.0)
        meta["resumed_rows"] += m.get("resumed_rows", 0)
        out.mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*_pca.png"):
            if png.parent.resolve() != out.resolve():
                shutil.copy(png, out / png.name)
    below = [f / "below_gate" for f in inputs if (f / "below_gate" / "paper.json").exists()]
    if below:
        sub = merge(below, out / "below_gate", f"{command} [below-gate reruns]")
        meta["below_gate"] = {"folder": "below_gate", "gate": sub["settings"]["iou_gate"],
                              "experiments": sorted({r["experiment"] for r in sub["runs"]}),
                              "seconds": sub["total_seconds"]}
    if wall_seconds is not None:  # parts ran side by side: their seconds add up to more than the wall time
        meta["process_seconds"], meta["total_seconds"] = meta["total_seconds"], wall_seconds
    meta["command"] = command or meta.get("command", "")
    meta["merged_from"] = [str(p) for p in inputs]
    meta["choices"] = choices({**dataclasses.asdict(FULL), **meta["settings"]})
    meta["sanity"] = sanity_lines(meta["runs"])
    save_json(out, rows, meta)
    plot_curves(out, rows, meta.get("background_pixel_accuracy"))
    write_report(out, rows, meta)
    return meta


# rough CPU minutes of each experiment at the full settings, to balance parallel workers
COST = {"exp1": 35.0, "exp2": 60.0, "exp3": 25.0, "table4": 52.0}  # exp2 trains the shapes teachers


def split_work(experiments: tuple[str, ...], workers: int) -> list[tuple[str, ...]]:
    """Longest-first greedy split of experiments over workers; each group keeps the canonical order."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(workers, len(experiments))))]
    for name in sorted(experiments, key=lambda e: -COST.get(e, 1.0)):
        min(groups, key=lambda g: sum(COST.get(e, 1.0) for e in g)).append(name)
    return [tuple(e for e in EXPERIMENTS if e in g) for g in groups if g]


def bench_parallel(experiments: tuple[str, ...], out: Path, workers: int, child_args: list[str],
                   command: str = "") -> dict:
    """Run groups of experiments as separate `benchmarks.paper bench` processes (one per core), then merge.
    Teachers are shared through the cache (a lock per teacher: nobody trains one twice)."""
    start = time.perf_counter()
    parts, procs = [], []
    for k, group in enumerate(split_work(experiments, workers)):
        part = out / "parts" / str(k)
        part.mkdir(parents=True, exist_ok=True)
        log = (part / "log.txt").open("w")
        cmd = [sys.executable, "-m", "benchmarks.paper", "bench", *group, "--out", str(part), *child_args]
        print(f"worker {k}: {' '.join(group)} (log: {part / 'log.txt'})", flush=True)
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_worker_env()), log))
        parts.append(part)
    with tqdm(desc="result rows (all workers)", unit="row", dynamic_ncols=True) as bar:
        while any(p.poll() is None for p, _ in procs):
            if any(p.poll() not in (None, 0) for p, _ in procs):  # one failed: the merge cannot happen
                for p, _ in procs:
                    p.terminate()
                break
            time.sleep(5)
            bar.n = sum(_rows_written(part) for part in parts)
            bar.refresh()
    for _, log in procs:
        log.close()
    # the worker that failed first (exit code > 0) before those terminated because of it (< 0)
    codes = [p.wait() for p, _ in procs]
    for code, part in sorted(zip(codes, parts), key=lambda cp: cp[0] <= 0):
        if code != 0:
            tail = "\n".join((part / "log.txt").read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"bench worker {part} failed with exit code {code}:\n{tail}")
    return merge(parts, out, command, wall_seconds=time.perf_counter() - start)


def _worker_env() -> dict[str, str]:
    """The harness is not installed: workers find `benchmarks` through the repository root."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _rows_written(part: Path) -> int:
    """Result rows a worker has written so far (its partial file, or its final paper.json once done)."""
    try:
        return sum(1 for line in (part / "paper.partial.jsonl").open() if line.strip())
    except FileNotFoundError:
        try:
            return len(json.loads((part / "paper.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return 0


def resolve(names: list[str]) -> tuple[str, ...]:
    if "all" in names:
        return EXPERIMENTS
    return tuple(n for n in EXPERIMENTS if n in names)


__all__ = ["QUICK", "FULL", "bench", "bench_parallel", "resolve"]
