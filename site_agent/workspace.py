"""A site's local workspace: the split teacher as module dirs, `site.json`, optional shared samples.

Layout:
    site.json                          who/what/how (written last: its presence means "complete")
    category/module.{json,safetensors} the category module f
    tasks/<task>/module.{json,safetensors}
    samples.safetensors                only if the operator opted in to share labelled samples
    pushed.json                        module ids the registry returned on the last push
The held-out split is never written here: it is reloaded from the data source and seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import common.samples
from transplant.data import CategoryDataset, Split
from transplant.spec import (ModuleSpec, SpecError, SpecModule, WeightsError, load_module, save_module,
                            weights_from_bytes)
from transplant.teacher import TeacherNet

from site_agent.data import load_source, parse_source
from site_agent.errors import SiteAgentError

SITE_FORMAT = "transplant.site.v1"
SITE_FILE, PUSHED_FILE, SAMPLES_FILE = "site.json", "pushed.json", "samples.safetensors"
WEIGHTS_FILE, SPEC_FILE = "module.safetensors", "module.json"


@dataclass
class SiteInfo:
    """Everything `site.json` records; enough to reload the held-out split bit for bit."""

    site_id: str
    category: str
    data: str                       # the data source string, e.g. "digits:3"
    size: int
    seed: int
    tasks: list[str]
    architecture: dict[str, Any]    # VGGConfig fields
    training: dict[str, Any]        # TeacherTraining fields
    teacher_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # held-out split
    feature_norm_mean: float = 0.0  # E ||f(I)||_F over the training images
    num_images: int = 0             # training images behind that mean
    shared_samples: int = 0         # labelled samples in samples.safetensors (0: none shared)
    n_train: int | None = 1000      # shapes sources only: images rendered per split (None elsewhere)
    n_test: int | None = 400
    negatives: list[str] | None = None  # what the classifier was trained to reject (None: the source's default)
    created: float = field(default_factory=time.time)
    # imported nets (`site_agent import`): [H, W] when not [size, size], and the per-channel normalisation the
    # net was trained with; every reader of the site's data (evaluation, shared samples) feeds it that way
    input_size: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return (self.input_size[0], self.input_size[1]) if self.input_size else (self.size, self.size)

    def to_json(self) -> dict[str, Any]:
        return {"format": SITE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, doc: Any) -> SiteInfo:
        if not isinstance(doc, dict) or doc.get("format") != SITE_FORMAT:
            raise SiteAgentError(f"not a site workspace file (format must be {SITE_FORMAT!r})")
        try:
            return cls(**{k: v for k, v in doc.items() if k != "format"})
        except TypeError as exc:
            raise SiteAgentError(f"malformed {SITE_FILE}: {exc}") from None


@dataclass(frozen=True)
class ModuleFile:
    """One module exactly as it is pushed: spec JSON and the safetensors bytes on disk."""

    name: str              # "category", "task:classification", "samples"
    role: str              # "category" | "task" | "samples"
    task: str
    spec_json: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def exists(directory: Path | str) -> bool:
    return (Path(directory) / SITE_FILE).is_file()


def save_workspace(directory: Path | str, info: SiteInfo, net: TeacherNet, samples: Split | None = None) -> Path:
    return save_modules(directory, info, net.category, {t: net.task_module(t) for t in info.tasks}, samples)


def save_modules(directory: Path | str, info: SiteInfo, category: SpecModule, tasks: dict[str, SpecModule],
                 samples: Split | None = None) -> Path:
    """The workspace of a trained or imported net; site.json last, so its presence means complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_module(category, directory / "category")
    for task in info.tasks:
        save_module(tasks[task], directory / "tasks" / task)
    if samples is not None and len(samples):
        (directory / SAMPLES_FILE).write_bytes(samples_to_bytes(samples))
        info.shared_samples = len(samples)
    (directory / SITE_FILE).write_text(json.dumps(info.to_json(), indent=2))
    return directory


def load_info(directory: Path | str) -> SiteInfo:
    path = Path(directory) / SITE_FILE
    if not path.is_file():
        raise SiteAgentError(f"no site workspace at {directory} ({SITE_FILE} missing): run `train` first")
    try:
        return SiteInfo.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise SiteAgentError(f"{path} is not valid JSON: {exc}") from None


def _module_dir(directory: Path, task: str | None) -> Path:
    return directory / "category" if task is None else directory / "tasks" / task


def load_spec_module(directory: Path | str, task: str | None = None) -> SpecModule:
    """The category module (task None) or a task module, validated against its spec."""
    path = _module_dir(Path(directory), task)
    try:
        return load_module(path)
    except FileNotFoundError:
        raise SiteAgentError(f"workspace module missing: {path}") from None
    except (SpecError, WeightsError) as exc:
        raise SiteAgentError(f"workspace module {path} is corrupt: {exc}") from None


def _read_module(directory: Path, task: str | None) -> ModuleFile:
    path = _module_dir(directory, task)
    try:
        spec_json, data = (path / SPEC_FILE).read_text(), (path / WEIGHTS_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise SiteAgentError(f"workspace module missing: {exc.filename}") from None
    try:  # refuse to push what a receiver would reject anyway
        weights_from_bytes(data, ModuleSpec.loads(spec_json))
    except (SpecError, WeightsError) as exc:
        raise SiteAgentError(f"workspace module {path} is corrupt: {exc}") from None
    if task is None:
        return ModuleFile("category", "category", "", spec_json, data)
    return ModuleFile(f"task:{task}", "task", task, spec_json, data)


def module_files(directory: Path | str) -> list[ModuleFile]:
    """What `push` uploads, category module first."""
    directory = Path(directory)
    info = load_info(directory)
    files = [_read_module(directory, None)] + [_read_module(directory, t) for t in info.tasks]
    if info.shared_samples:
        data = (directory / SAMPLES_FILE).read_bytes()
        spec = samples_spec(samples_from_bytes(data))
        files.append(ModuleFile("samples", "samples", "", json.dumps(spec, sort_keys=True), data))
    return files


def category_sha256(directory: Path | str) -> str:
    return hashlib.sha256((Path(directory) / "category" / WEIGHTS_FILE).read_bytes()).hexdigest()


def samples_to_bytes(samples: Split) -> bytes:
    return common.samples.samples_to_bytes(samples.images, samples.labels, samples.masks)


def samples_from_bytes(data: bytes) -> Split:
    try:
        return Split(*common.samples.samples_from_bytes(data))
    except ValueError as exc:
        raise SiteAgentError(f"shared samples are {exc}") from None


def samples_spec(samples: Split) -> dict[str, Any]:
    """The declarative description sent in place of a module spec for a samples upload."""
    return common.samples.samples_spec(samples.images, samples.labels, samples.masks)


def load_samples(directory: Path | str) -> Split | None:
    path = Path(directory) / SAMPLES_FILE
    return samples_from_bytes(path.read_bytes()) if path.is_file() else None


def load_dataset(info: SiteInfo) -> CategoryDataset:
    """Reload the data from its source; same source, size and seed give the same held-out split, fed as the
    site's net reads it (an imported net's normalisation applied)."""
    shapes = parse_source(info.data).kind == "shapes"  # older workspaces record n_train/n_test for every source
    dataset = load_source(info.data, size=info.hw if info.input_size else info.size, seed=info.seed,
                          n_train=info.n_train if shapes else None, n_test=info.n_test if shapes else None,
                          negatives=tuple(info.negatives) if info.negatives else None)
    if info.mean is None and info.std is None:
        return dataset
    return dataclasses.replace(dataset, train=normalise(dataset.train, info.mean, info.std),
                               test=normalise(dataset.test, info.mean, info.std))


def normalise(split: Split, mean: list[float] | None, std: list[float] | None) -> Split:
    """(images - mean) / std per channel: how a net trained on normalised images is fed."""
    channels = split.images.shape[1]
    m = torch.tensor(mean or [0.0] * channels).reshape(1, -1, 1, 1)
    s = torch.tensor(std or [1.0] * channels).reshape(1, -1, 1, 1)
    return Split((split.images - m) / s, split.labels, split.masks)


def eval_split(info: SiteInfo) -> Split:
    return load_dataset(info).test


def save_pushed(directory: Path | str, ids: dict[str, dict[str, str]]) -> None:
    (Path(directory) / PUSHED_FILE).write_text(json.dumps(ids, indent=2))


def load_pushed(directory: Path | str) -> dict[str, dict[str, str]]:
    path = Path(directory) / PUSHED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def config_dict(obj: Any) -> dict[str, Any]:
    """A frozen dataclass as JSON-ready fields (tuples become lists)."""
    return json.loads(json.dumps(asdict(obj)))


__all__ = ["ModuleFile", "SiteInfo", "category_sha256", "config_dict", "eval_split", "exists", "load_dataset",
           "load_info", "load_pushed", "load_samples", "load_spec_module", "module_files", "normalise",
           "samples_from_bytes", "samples_spec", "samples_to_bytes", "save_modules", "save_pushed", "save_workspace"]
