"""The `import` command's flags and entry (the logic is site_agent.importer); `class_names`, shared with train."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from site_agent.data import NEGATIVES_HELP, SOURCE_HELP
from site_agent.errors import SiteAgentError
from site_agent.workspace import exists


def class_names(text: str) -> tuple[str, ...]:
    """`--negatives a,b` (train and import)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected class names like a,b; got {text!r}")
    return names


def add_import_args(p: argparse.ArgumentParser) -> None:
    from transplant.importing import DEFAULT_SPLIT
    from transplant.tasks import task_names

    g = p.add_argument_group("the net to import")
    g.add_argument("--site-id", required=True, help="this site's id, as the coordinator knows it")
    g.add_argument("--data", required=True, metavar="SOURCE",
                   help=f"the site's own data, to evaluate the imported net on: {SOURCE_HELP}")
    g.add_argument("--weights", type=Path, required=True, metavar="FILE",
                   help="the net's state dict: .safetensors, or a torch file read with torch.load(weights_only=True)."
                        " Without --model: torchvision's VGG layout (features.N / classifier.N: vgg11..19, _bn) or "
                        "an FCN-8s-style segmenter on that trunk (+ fc6, fc7, score_fr, score_pool4, score_pool3, "
                        "upscore2, upscore_pool4, upscore8)")
    g.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                   help="any other net: a function of the site's own code returning the torch.nn.Module the weights "
                        "fit; traced with torch.fx into the closed op set (other ops are refused by name)")
    g.add_argument("--task", choices=task_names(),
                   help="default: segmentation for FCN-8s weights, else classification")
    g.add_argument("--split", default=DEFAULT_SPLIT, metavar="NODE",
                   help=f"the node the category module ends at (default {DEFAULT_SPLIT}, as the paper; a --model "
                        "net without that name: its first max pool)")
    g.add_argument("--input-size", type=_size, default=(224, 224), metavar="H[xW]",
                   help="the net's input in pixels (default 224; e.g. 320x240)")
    g.add_argument("--keep", type=_ints, metavar="I[,J]",
                   help="output channels: classification POSITIVE[,NEGATIVE] (the logit, or the difference of two; "
                        "default for 2 outputs 1,0), segmentation BACKGROUND,CATEGORY (default for VOC's 21: 0 and "
                        "the category's index)")
    g.add_argument("--mean", type=_floats, metavar="M[,M,M]",
                   help="per-channel mean the net was trained with (default for VGG layouts: ImageNet's)")
    g.add_argument("--std", type=_floats, metavar="S[,S,S]", help="per-channel std (default as --mean)")
    g.add_argument("--category", help="category name pushed to the registry (default: the data set's class)")
    g.add_argument("--seed", type=int, default=0, help="held-out split seed (default 0)")
    g.add_argument("--negatives", type=class_names, default=None, metavar="CLASS[,CLASS...]",
                   help=f"what counts as not the category. Default per source: {NEGATIVES_HELP}")
    g.add_argument("--share-samples", type=int, default=0, metavar="N",
                   help="opt in to share N labelled samples for few-shot jobs (default 0: none)")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected H or HxW in pixels, got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,0; got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,0.5,0.5; got {text!r}") from None


def cmd_import(args: argparse.Namespace, push: Callable[[argparse.Namespace], int]) -> int:
    """`import`: write the workspace (evaluated on the site's data), then `push` it when --coordinator is given."""
    from site_agent.importer import ImportOptions, import_site

    if exists(args.workspace) and not args.force:
        raise SiteAgentError(f"workspace {args.workspace} already holds a net; use --force to import over it")
    opts = ImportOptions(site_id=args.site_id, data=args.data, weights=args.weights, model=args.model, task=args.task,
                         split=args.split, input_size=args.input_size, keep=args.keep, mean=args.mean, std=args.std,
                         category=args.category, seed=args.seed, negatives=args.negatives,
                         share_samples=args.share_samples)
    info, metrics = import_site(opts, args.workspace)
    shape = "x".join(map(str, info.architecture["input_shape"]))
    print(f"site {info.site_id}: imported {args.weights} ({info.architecture['imported']}, input {shape}, "
          f"split after {info.architecture['split']}) -> {args.workspace}")
    print(f"  held-out {info.tasks[0]} on {info.data}: " + ", ".join(f"{k} {v:.2f}%" for k, v in metrics.items()))
    if args.coordinator:
        return push(args)
    return 0
