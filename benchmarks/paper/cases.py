"""Each experiment's transplant problems (`Case`s): its teachers (cached), generic modules and splits.

runner.py runs every method in every cell of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.paper.settings import Settings
from benchmarks.paper.teachers import Teacher, pretrained_base, shared_task_net, single_category_teacher
from transplant.architectures import CLASSIFICATION, SEGMENTATION
from transplant.data import (BACKGROUND, CATEGORIES, DISSIMILAR, SIMILAR, load_digits_category, load_shapes_category,
                             load_shapes_multicategory)
from transplant.data.common import Split
from transplant.job import beta_from_stats
from transplant.metrics import evaluate
from transplant.spec.build import SpecModule
from transplant.teacher import TeacherTraining


@dataclass
class Case:
    """One category's transplant: f (+ its teacher task g_T) into a generic task module g_S."""

    experiment: str
    category: str
    task: str
    category_module: SpecModule
    teacher_task: SpecModule
    generic_task: SpecModule
    generic_category_module: SpecModule
    beta: float
    train: Split          # where few-shot samples come from
    test: Split
    teacher_metrics: dict  # the category's own teacher on `test`
    layers: tuple[int, ...]
    samples: tuple[int, ...]
    kernel_size: int
    reorder: bool
    g_mode: str


@dataclass
class Context:
    settings: Settings
    cache: Path
    meta: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    pca: dict = field(default_factory=dict)   # (experiment, category) -> {label: features}
    log: Callable[[str], None] = print
    partial: Path | None = None                # rows are appended here as they come (a crash loses nothing)
    done: set = field(default_factory=set)     # runs already in `partial` (resume)
    base: Teacher | None = None                # the shared pre-trained start, once built or loaded


def _bar_progress(desc: str, position: int = 1):
    bar = tqdm(total=1, desc=desc, leave=False, position=position, dynamic_ncols=True)

    def progress(step: int, total: int, loss: float) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = step
        if step % 20 == 0 or step == total:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.refresh()
        if step == total:
            bar.close()

    return progress


# ------------------------------------------------------------------ teachers
def digits_teacher(ctx: Context, category: str) -> tuple[Teacher, object]:
    s = ctx.settings
    data = load_digits_category(category, seed=s.teacher_seed, size=s.digits_size)
    training = TeacherTraining(epochs=s.digits_teacher_epochs, seed=s.teacher_seed)
    teacher = single_category_teacher(
        ctx.cache, f"digits{category}", s.digits_config(), (CLASSIFICATION,), data.train, data.test, training,
        {"source": "digits", "category": category, "seed": s.teacher_seed, "size": s.digits_size},
        _bar_progress(f"teacher digit {category}"))
    return teacher, data


def shapes_data(s: Settings, category: str):
    """A shapes teacher's data: the category against the regime's negatives (test set alike)."""
    return load_shapes_category(category, n_train=s.shapes_train, n_test=s.shapes_test, seed=s.teacher_seed,
                                size=s.shapes_size, negatives=s.negatives())


def shapes_training(s: Settings, epochs: int, seed: int | None = None) -> TeacherTraining:
    """One recipe for every shapes net (single-category teachers and leave-one-out nets)."""
    return TeacherTraining(epochs=epochs, batch_size=s.shapes_teacher_batch, lr=s.shapes_teacher_lr,
                           seed=s.teacher_seed if seed is None else seed, seg_weight=s.shapes_teacher_seg_weight,
                           cosine=True)


def shapes_base(ctx: Context) -> Teacher | None:
    """The shared pre-trained start of every shapes net, or None (every net from its own random init)."""
    s = ctx.settings
    if not s.shared_base or ctx.base is not None:
        return ctx.base
    data = load_shapes_multicategory(CATEGORIES, s.pretrain_per_category, seed=s.teacher_seed, size=s.shapes_size)
    ctx.base = pretrained_base(ctx.cache, s.shapes_config(), data, len(CATEGORIES),
                               shapes_training(s, s.pretrain_epochs),
                               {"source": "shapes-multi", "n": s.pretrain_per_category, "seed": s.teacher_seed,
                                "size": s.shapes_size}, _bar_progress("pre-trained base (all categories)"))
    return ctx.base


def shapes_teacher(ctx: Context, category: str) -> tuple[Teacher, object]:
    s = ctx.settings
    data = shapes_data(s, category)
    base = shapes_base(ctx)
    seed = s.init_seed(category)
    training = shapes_training(s, s.shapes_teacher_epochs, seed) if base is None else dataclasses.replace(
        shapes_training(s, s.finetune_epochs, seed), lr=s.finetune_lr)
    teacher = single_category_teacher(
        ctx.cache, f"shapes-{category}", s.shapes_config(), (CLASSIFICATION, SEGMENTATION), data.train, data.test,
        training, {"source": "shapes", "category": category, "seed": s.teacher_seed, "n_train": s.shapes_train,
                   "n_test": s.shapes_test, "size": s.shapes_size, "negatives": list(s.negatives())},
        _bar_progress(f"teacher {category}"), base)
    return teacher, data


def gate(ctx: Context, name: str, teacher: Teacher, data=None) -> bool:
    """A segmentation-capable teacher is used only if its object IoU reaches settings.iou_gate."""
    seg = teacher.metrics.get(SEGMENTATION)
    entry = {"classification_error_rate": teacher.metrics.get(CLASSIFICATION, {}).get("error_rate")}
    passed = True
    if seg is not None:
        passed = seg["iou"] >= ctx.settings.iou_gate
        entry.update(pixel_accuracy=seg["pixel_accuracy"], iou=seg["iou"],
                     background_pixel_accuracy=seg.get("background_pixel_accuracy"))
        if data is not None and entry["background_pixel_accuracy"] is None:
            entry["background_pixel_accuracy"] = _bg(data.test)
    entry.update(passed=passed, gate=ctx.settings.iou_gate if seg is not None else None)
    ctx.meta.setdefault("teachers", {})[name] = entry
    if not passed:
        ctx.log(f"gate: teacher '{name}' has object IoU {seg['iou']:.1f}% < {ctx.settings.iou_gate}%: excluded")
    return passed


def _bg(test: Split) -> float:
    from transplant.metrics import background_pixel_accuracy
    return background_pixel_accuracy(test.masks[test.labels == 1])


# ------------------------------------------------------------------ cases per experiment
def exp1_cases(ctx: Context) -> list[Case]:
    s = ctx.settings
    cases = []
    for c in s.digits_categories:
        teacher, data = digits_teacher(ctx, c)
        gate(ctx, f"digits{c}", teacher)
        task = teacher.tasks[CLASSIFICATION]
        cases.append(Case("exp1", c, CLASSIFICATION, teacher.category, task, task, teacher.category, 1.0,
                          data.train, data.test, teacher.metrics, s.exp1_layers, s.exp1_samples, 3, True,
                          "ones_masked"))
    return cases


def _positives(split: Split) -> Split:
    return split.take(torch.nonzero(split.labels == 1).flatten())


def _generic(ctx: Context) -> Teacher | None:
    s = ctx.settings
    teacher, data = shapes_teacher(ctx, s.generic)
    return teacher if gate(ctx, f"shapes-{s.generic}", teacher, data) else None


def _shapes_cases(ctx: Context, experiment: str, task: str, generic_of: Callable[[str], Teacher | None],
                  layers: tuple[int, ...], samples: tuple[int, ...], g_mode: str) -> list[Case]:
    s = ctx.settings
    cases = []
    for c in (s.table4_targets if experiment == "table4" else s.targets):
        teacher, data = shapes_teacher(ctx, c)
        if not gate(ctx, f"shapes-{c}", teacher, data):
            ctx.meta.setdefault("excluded", []).append({"experiment": experiment, "category": c,
                                                        "why": "teacher below the IoU gate"})
            continue
        generic = generic_of(c)
        if generic is None:
            ctx.meta.setdefault("excluded", []).append({"experiment": experiment, "category": c,
                                                        "why": "generic net below the IoU gate"})
            continue
        generic_error = generic.metrics.get(CLASSIFICATION, {}).get("error_rate", 0.0)
        if task == CLASSIFICATION and generic_error > s.cls_gate:
            ctx.meta.setdefault("excluded", []).append({
                "experiment": experiment, "category": c,
                "why": f"generic classifier {generic_error:.1f}% error > {s.cls_gate}% (near chance: nothing to "
                       "transplant into)"})
            continue
        generic_norm = float(np.mean(list(generic.feature_norm.values())))
        beta = beta_from_stats(generic_norm, next(iter(teacher.feature_norm.values())))
        f_s = generic.categories.get(s.generic, generic.category)
        train, test = data.train, data.test
        if task == SEGMENTATION:
            train, test = _positives(train), _positives(test)
            ctx.meta.setdefault("background_pixel_accuracy", {})[c] = _bg(data.test)
        ctx.meta.setdefault("controls", {}).setdefault(experiment, {}).setdefault(task, {})[c] = \
            unchanged_generic(task, teacher.category, generic.tasks[task], test)
        cases.append(Case(experiment, c, task, teacher.category, teacher.tasks[task], generic.tasks[task], f_s,
                          beta, train, test, teacher.metrics, layers, samples, 1, True, g_mode))
    return cases


@torch.no_grad()
def unchanged_generic(task: str, category_module: SpecModule, generic_task: SpecModule, test: Split) -> dict[str, float]:
    """Control: the generic task module on the target's own features, no adapter and no reorder.
    Classification: how often it says "yes" on the target's images, and its error; segmentation: its metrics."""
    forward = lambda x: generic_task(category_module(x))  # noqa: E731
    if task == CLASSIFICATION:
        positives = test.images[test.labels == 1]
        yes = float((forward(positives).reshape(-1) > 0).float().mean() * 100)
        return {"yes_rate": yes, **evaluate(forward, task, test.images, test.labels)}
    return evaluate(forward, task, test.images, test.labels, test.masks)


def _with_zero(s: Settings, samples: tuple[int, ...]) -> tuple[int, ...]:
    return ((0,) if s.extra_zero_sample_back_distill else ()) + tuple(samples)


def exp2_cases(ctx: Context) -> list[Case]:
    generic = _generic(ctx)
    return _shapes_cases(ctx, "exp2", CLASSIFICATION, lambda c: generic, ctx.settings.exp2_layers,
                         _with_zero(ctx.settings, ctx.settings.samples), "enlarged")


def exp3_cases(ctx: Context) -> list[Case]:
    generic = _generic(ctx)
    return _shapes_cases(ctx, "exp3", SEGMENTATION, lambda c: generic, (1,), _with_zero(ctx.settings,
                         ctx.settings.samples), "uniform")


def leave_one_out(ctx: Context, target: str) -> Teacher | None:
    """A generic net for all dissimilar + similar categories except `target` (paper Sec. 4.4)."""
    s = ctx.settings
    members = [c for c in (*SIMILAR, *DISSIMILAR) if c != target]
    trains, tests = {}, {}
    for c in members:
        d = load_shapes_category(c, n_train=s.loo_train_per_category, n_test=s.shapes_test, seed=s.teacher_seed,
                                 size=s.shapes_size,
                                 negatives=tuple(n for n in s.negatives() if n in members or n == BACKGROUND))
        trains[c], tests[c] = d.train, d.test
    base = shapes_base(ctx)
    training = dataclasses.replace(shapes_training(s, s.loo_epochs),
                                   lr=s.loo_lr if base is None else s.finetune_lr)
    net = shared_task_net(ctx.cache, f"loo-{target}", s.shapes_config(), trains, tests, training,
                          {"source": "shapes", "members": members, "n_train": s.loo_train_per_category, "negatives": list(s.negatives()),
                           "n_test": s.shapes_test, "seed": s.teacher_seed, "size": s.shapes_size},
                          _bar_progress(f"leave-one-out net without {target}"), base)
    return net if gate(ctx, f"loo-{target}", net) else None


def table4_cases(ctx: Context) -> list[Case]:
    s = ctx.settings
    nets: dict[str, Teacher | None] = {}

    def generic_of(c: str) -> Teacher | None:
        if c not in nets:
            nets[c] = leave_one_out(ctx, c)
        return nets[c]

    return (_shapes_cases(ctx, "table4", CLASSIFICATION, generic_of, (3,), s.table4_cls_samples, "enlarged")
            + _shapes_cases(ctx, "table4", SEGMENTATION, generic_of, (1,), s.table4_seg_samples,
                            "uniform"))


CASES = {"exp1": exp1_cases, "exp2": exp2_cases, "exp3": exp3_cases, "table4": table4_cases}
