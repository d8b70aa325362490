"""Train a site's teacher on its local data and write the workspace (the `train` command)."""
from __future__ import annotations

import dataclasses

import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from transplant.architectures import teacher_specs, vgg_small
from transplant.spec import ModuleSpec, SpecModule, output_shape
from transplant.spec.schema import OUTPUT, PREPROCESS
from transplant.tasks import get_task
from transplant.teacher import TeacherNet, TeacherTraining, evaluate_teacher, feature_norm_mean, train_teacher

from site_agent.data import load_source, parse_source
from site_agent.errors import SiteAgentError
from site_agent.start import Start
from site_agent.workspace import SiteInfo, config_dict, normalise, save_workspace


@dataclass(frozen=True)
class TrainOptions:
    site_id: str
    data: str
    size: int = 16
    width: int = 8
    depth: int = 3
    fc: int = 128
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    cosine: bool = False         # cosine decay of lr to 0 over the run
    dropout: float = 0.5         # on the fc layers (VGG's default); small task heads often do better with 0
    seg_weight: float = 1.0      # weight of the segmentation loss beside classification
    seed: int = 0
    share_samples: int = 0
    category: str | None = None  # registry category name; default: the data set's own name
    n_train: int | None = None   # shapes sources only (default 1000); refused for others
    n_test: int | None = None    # shapes sources only (default 400)
    negatives: tuple[str, ...] | None = None  # shapes and folder sources: what the classifier rejects


def _check(opts: TrainOptions) -> None:
    parse_source(opts.data)  # fail on a malformed source before any work
    if not opts.site_id.strip():
        raise SiteAgentError("--site-id must not be empty")
    if opts.size % (2 ** opts.depth):
        raise SiteAgentError(f"--size {opts.size} must be divisible by 2**depth = {2 ** opts.depth}")
    if min(opts.width, opts.depth, opts.epochs, opts.batch_size, opts.fc) < 1 or opts.depth < 3:
        raise SiteAgentError("--width, --epochs, --batch-size, --fc must be >= 1 and --depth >= 3")
    if opts.share_samples < 0:
        raise SiteAgentError("--share-samples must be >= 0")


def record_meaning(net: TeacherNet, category: str, channels: int, size: int, mean: list[float] | None = None,
                   std: list[float] | None = None) -> None:
    """Write into the module specs how this site feeds its net and what the outputs mean, so both
    travel with the modules (metadata.preprocess / metadata.output, validated by the spec schema).

    Every source here ends as float [channels, size, size] in [0, 1] from a bilinear resize: folder
    and VOC images through transplant.data.folders.preprocess_image (/255), digits and shapes drawn
    straight into [0, 1]; a user's 8-bit image reaches the same range by /255. A net started from a base
    that normalises its input (`mean`, `std`, e.g. an imported ImageNet VGG) is fed the same way.
    """
    prep = {"channels": channels, "size": [size, size], "resize": "bilinear", "divide": 255.0,
            "mean": mean or [0.0] * channels, "std": std or [1.0] * channels}
    _set_metadata(net.category, PREPROCESS, prep)
    for task in net.tasks:
        module = net.task_module(task)  # the task type's meaning, naming this site's category
        _set_metadata(module, OUTPUT, get_task(task).output.default(output_shape(module.spec), category))


def _set_metadata(module: SpecModule, key: str, value: dict) -> None:
    spec = module.spec
    # re-parsed, so a wrong description fails here at the site, not later at the registry
    module.spec = ModuleSpec.from_json({**spec.to_json(), "metadata": {**spec.metadata, key: value}})


def train_site(opts: TrainOptions, workspace: Path | str, progress: bool = True,
               start: Start | None = None) -> tuple[SiteInfo, TeacherNet]:
    """Train, evaluate on the held-out split, split into modules, compute E||f(I)||_F, save. With `start`
    (site_agent.start: a base or a site to join), its architecture, and a base's weights as the start."""
    _check(opts)
    if start is not None:
        opts = dataclasses.replace(opts, size=start.config.image_size)
    dataset = load_source(opts.data, opts.size, opts.seed, opts.n_train, opts.n_test, opts.negatives)
    shapes = parse_source(opts.data).kind == "shapes"
    tasks = parse_source(opts.data).tasks
    mean, std = (start.mean, start.std) if start is not None else (None, None)
    if mean is not None or std is not None:  # fed as the base was (site.json records it for every later read)
        dataset = dataclasses.replace(dataset, train=normalise(dataset.train, mean, std),
                                      test=normalise(dataset.test, mean, std))
    train = dataset.train
    cfg = start.config if start is not None else dataclasses.replace(
        vgg_small(width=opts.width, depth=opts.depth, image_size=opts.size, in_channels=int(train.images.shape[1]),
                  fc=opts.fc), dropout=opts.dropout)
    if cfg.in_channels != int(train.images.shape[1]):
        raise SiteAgentError(f"{start.source if start else 'the net'} reads {cfg.in_channels}-channel images but "
                             f"{opts.data!r} gives {int(train.images.shape[1])}")
    config = TeacherTraining(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
                             seg_weight=opts.seg_weight, cosine=opts.cosine)
    with tqdm(desc=f"train {opts.site_id}", unit="step", disable=not progress, leave=True) as bar:
        def report(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        with warnings.catch_warnings():  # train_teacher reports float(loss) of a grad tensor: harmless
            warnings.simplefilter("ignore", UserWarning)
            net = train_teacher(teacher_specs(cfg, tasks), train.images, train.labels, train.masks, config, report,
                                init=start.weights if start is not None else None)
    test = dataset.test
    info = SiteInfo(
        site_id=opts.site_id, category=opts.category or dataset.category, data=opts.data, size=opts.size,
        seed=opts.seed, tasks=list(tasks), architecture=config_dict(cfg),
        training={**config_dict(config), **({"start": start.record()} if start is not None else {})},
        teacher_metrics=evaluate_teacher(net, test.images, test.labels, test.masks),
        # the rescaling statistic (beta's denominator/numerator): a number, never the images
        feature_norm_mean=feature_norm_mean(net.category, train.images), num_images=len(train),
        n_train=(opts.n_train or 1000) if shapes else None, n_test=(opts.n_test or 400) if shapes else None,
        negatives=list(opts.negatives) if opts.negatives else None, mean=mean, std=std)
    samples = train.subset(opts.share_samples, seed=opts.seed) if opts.share_samples else None
    record_meaning(net, info.category, int(train.images.shape[1]), opts.size, mean, std)
    save_workspace(workspace, info, net, samples)
    return info, net
