"""Teachers for the benchmark, trained once by the site agent's own code and cached on disk.

Each teacher is stored as modules (spec JSON + safetensors via `transplant.spec.save_module`)
under `benchmarks/cache/teachers/<name>-<hash>/`, where the hash covers everything that defines
it (architecture, data, training). Nothing is downloaded; a changed setting trains a new one.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from transplant.architectures import CLASSIFICATION, SEGMENTATION, VGGConfig, teacher_specs
from transplant.data.common import Split, feature_norm_images
from transplant.metrics import background_pixel_accuracy, evaluate
from transplant.spec.build import SpecModule, build_module, load_module, save_module
from transplant.teacher import (TeacherNet, TeacherTraining, copy_matching, evaluate_teacher, feature_norm_mean,
                               init_weights, joint_loss, optimise, train_teacher)

CACHE_VERSION = 3  # bump when teacher training code changes: cached teachers must come from the current code
FEATURE_NORM_IMAGES = 256
Progress = Callable[[int, int, float], None]


@dataclass
class Teacher:
    """A trained net as modules: category module(s) and task modules, with its test metrics."""

    name: str
    categories: dict[str, SpecModule]          # one for a teacher; several for a leave-one-out net
    tasks: dict[str, SpecModule]
    metrics: dict = field(default_factory=dict)  # task -> metric -> value (own test set)
    feature_norm: dict[str, float] = field(default_factory=dict)  # category -> E||f(I)||_F on its train images

    @property
    def category(self) -> SpecModule:
        return next(iter(self.categories.values()))


def config_hash(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _save(teacher: Teacher, directory: Path) -> None:
    for c, module in teacher.categories.items():
        save_module(module, directory / "category" / c)
    for t, module in teacher.tasks.items():
        save_module(module, directory / t)
    (directory / "meta.json").write_text(json.dumps(
        {"name": teacher.name, "metrics": teacher.metrics, "feature_norm": teacher.feature_norm,
         "categories": list(teacher.categories), "tasks": list(teacher.tasks)}, indent=1))


def _load(directory: Path) -> Teacher:
    meta = json.loads((directory / "meta.json").read_text())
    return Teacher(meta["name"], {c: load_module(directory / "category" / c) for c in meta["categories"]},
                   {t: load_module(directory / t) for t in meta["tasks"]}, meta["metrics"], meta["feature_norm"])


def cached(cache: Path, name: str, key: dict, build: Callable[[], Teacher]) -> Teacher:
    """Load the teacher for `key`, or build and store it. An exclusive lock per teacher makes parallel
    bench processes wait for the one already training it instead of training it again."""
    directory = cache / "teachers" / f"{name}-{config_hash({'v': CACHE_VERSION, **key})}"
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "meta.json").exists():
            return _load(directory)
        for stale in directory.parent.glob(f"{directory.name}.tmp*"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        teacher = build()
        tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
        _save(teacher, tmp)
        shutil.rmtree(directory, ignore_errors=True)  # a folder without meta.json: half-written by a killed run
        tmp.rename(directory)
        return teacher


def _norm(module: SpecModule, split: Split) -> float:
    return feature_norm_mean(module, feature_norm_images(split, FEATURE_NORM_IMAGES))


def single_category_teacher(cache: Path, name: str, cfg: VGGConfig, tasks: tuple[str, ...], train: Split,
                            test: Split, training: TeacherTraining, data_key: dict,
                            progress: Progress | None = None, base: Teacher | None = None) -> Teacher:
    """A site's teacher: `transplant.teacher.train_teacher`, exactly what a site agent runs
    (fine-tuned from `base`'s weights where they fit, if given)."""
    key = {"kind": "single", "cfg": dataclasses.asdict(cfg), "tasks": tasks,
           "training": dataclasses.asdict(training), "data": data_key}
    if base is not None:
        key["base"] = base.name

    def build() -> Teacher:
        net = train_teacher(teacher_specs(cfg, tasks), train.images, train.labels,
                            train.masks if SEGMENTATION in tasks else None, training, progress,
                            init=None if base is None else teacher_state(base))
        metrics = evaluate_teacher(net, test.images, test.labels, test.masks if SEGMENTATION in tasks else None)
        if SEGMENTATION in tasks:
            metrics[SEGMENTATION]["background_pixel_accuracy"] = background_pixel_accuracy(test.masks[test.labels == 1])
        return Teacher(name, {name: net.category}, {t: net.task_module(t) for t in tasks}, metrics,
                       {name: _norm(net.category, train)})

    return cached(cache, name, key, build)


def shared_task_net(cache: Path, name: str, cfg: VGGConfig, trains: dict[str, Split], tests: dict[str, Split],
                    training: TeacherTraining, data_key: dict, progress: Progress | None = None,
                    base: Teacher | None = None) -> Teacher:
    """Table 4's "leave-one-out" generic net: one category module per category, shared task modules.

    This is the paper's transplant net (Fig. 4): the classification module answers "is this image of
    the category whose module fed me?" for every category, the segmentation module segments its object.
    Trained like `train_teacher` (Adam, same losses, He init), batches taken round-robin over categories.
    """
    key = {"kind": "shared", "cfg": dataclasses.asdict(cfg), "training": dataclasses.asdict(training),
           "data": data_key, "categories": sorted(trains)}
    if base is not None:
        key["base"] = base.name

    def build() -> Teacher:
        torch.manual_seed(training.seed)
        specs = teacher_specs(cfg)
        cats = nn.ModuleDict({c: build_module(specs.category) for c in trains})
        tasks = nn.ModuleDict({t: build_module(s) for t, s in specs.tasks.items()})
        cats.apply(init_weights)
        tasks.apply(init_weights)
        if base is not None:  # every category module starts from the base's, the task modules from its tasks
            for module in cats.values():
                copy_matching(module, base.category.state_dict())
            copy_matching(tasks, {k.removeprefix("tasks."): v for k, v in teacher_state(base).items()})
        generator = torch.Generator().manual_seed(training.seed)
        cats.train(), tasks.train()
        batches_per_epoch = {c: -(-len(s) // training.batch_size) for c, s in trains.items()}

        def losses() -> Iterator[torch.Tensor]:  # batches of one category at a time, categories shuffled
            for _ in range(training.epochs):
                orders = {c: torch.randperm(len(s), generator=generator) for c, s in trains.items()}
                schedule = [c for c, k in batches_per_epoch.items() for _ in range(k)]
                schedule = [schedule[i] for i in torch.randperm(len(schedule), generator=generator).tolist()]
                cursor = dict.fromkeys(trains, 0)
                for c in schedule:
                    idx = orders[c][cursor[c]:cursor[c] + training.batch_size]
                    cursor[c] += training.batch_size
                    s = trains[c]
                    yield joint_loss(cats[c](s.images[idx]), tasks, s.labels[idx], s.masks[idx], training.seg_weight)

        params = list(cats.parameters()) + list(tasks.parameters())
        optimise(params, losses(), training.epochs * sum(batches_per_epoch.values()), training, progress)
        cats.eval(), tasks.eval()
        metrics: dict = {"per_category": {}}
        for c, t in tests.items():
            m = {CLASSIFICATION: evaluate(lambda z: tasks[CLASSIFICATION](cats[c](z)), CLASSIFICATION, t.images,
                                          t.labels)}
            keep = t.labels == 1
            m[SEGMENTATION] = evaluate(lambda z: tasks[SEGMENTATION](cats[c](z)), SEGMENTATION, t.images[keep],
                                       t.labels[keep], t.masks[keep])
            metrics["per_category"][c] = m
        for task in (CLASSIFICATION, SEGMENTATION):
            names = list(metrics["per_category"][next(iter(tests))][task])
            metrics[task] = {k: sum(metrics["per_category"][c][task][k] for c in tests) / len(tests) for k in names}
        return Teacher(name, dict(cats.items()), dict(tasks.items()), metrics,
                       {c: _norm(cats[c], trains[c]) for c in trains})

    return cached(cache, name, key, build)


def teacher_state(teacher: Teacher) -> dict[str, torch.Tensor]:
    """A teacher's weights named as in `TeacherNet` (category.*, tasks.<task>.*), for `copy_matching`."""
    state = {f"category.{k}": v for k, v in teacher.category.state_dict().items()}
    for task, module in teacher.tasks.items():
        state.update({f"tasks.{task}.{k}": v for k, v in module.state_dict().items()})
    return state


def pretrained_base(cache: Path, cfg: VGGConfig, data: Split, n_classes: int, training: TeacherTraining,
                    data_key: dict, progress: Progress | None = None) -> Teacher:
    """A net pre-trained on many categories, which every teacher then starts from: the role ImageNet's
    VGG-16 plays for the paper's VOC nets (so that different sites' category modules start alike).

    Classification is `n_classes`-way (labels = category index); segmentation is object vs background on
    every image. Trained with Adam, the teachers' segmentation weight and schedule."""
    base_cfg = dataclasses.replace(cfg, num_outputs=n_classes)
    key = {"kind": "base", "cfg": dataclasses.asdict(base_cfg), "training": dataclasses.asdict(training),
           "data": data_key}
    name = f"base-{config_hash(key)}"

    def build() -> Teacher:
        torch.manual_seed(training.seed)
        net = TeacherNet(teacher_specs(base_cfg)).train()
        generator = torch.Generator().manual_seed(training.seed)
        steps = -(-len(data) // training.batch_size)

        def losses() -> Iterator[torch.Tensor]:
            for _ in range(training.epochs):
                order = torch.randperm(len(data), generator=generator)
                for start in range(0, len(data), training.batch_size):
                    idx = order[start:start + training.batch_size]
                    features = net.category(data.images[idx])
                    yield F.cross_entropy(net.tasks[CLASSIFICATION](features), data.labels[idx]) \
                        + training.seg_weight * F.cross_entropy(net.tasks[SEGMENTATION](features), data.masks[idx])

        optimise(net.parameters(), losses(), training.epochs * steps, training, progress)
        net.eval()
        return Teacher(name, {"base": net.category}, {t: net.task_module(t) for t in net.tasks})

    return cached(cache, "base", key, build)
