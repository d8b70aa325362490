"""`transplant predict`: one JSON line per image on stdout.

Errors that concern one image (a corrupt or missing file) do not stop the run: that image's line
carries `error` instead of a score, and the exit status is 1 once all images are done. Errors that
concern the whole run (no net at --net, an unknown category or task) print one line to stderr and
exit with 2 before any image is read.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import torch

from transplant.predict import image_files, load_image, predict_batch, preprocessing, check_route, write_overlay

PREDICT_HELP = """Run a transplant net (a folder written by TransplantNet.save or `coordinator.admin download`)
on image files and folders (searched recursively for .png .jpg .jpeg .bmp .gif .tif .tiff .webp).
Each image is converted and resized as the category's site fed its own net (net.json: "preprocess").

One JSON line per image: file, category, task, score, label (classification: score is the logit,
label the category when it is above the threshold, else "not <category>"; segmentation: also
foreground_fraction and, with --out, overlay = a PNG with the mask in red). With --all-categories
every category the net serves for the task is scored and ranked by score, best first (logits of
different routes are not calibrated against each other: read the ranking as a hint).
A file that cannot be read gets a line with "error" and the exit status becomes 1."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="run the transplant net on your own images", description=PREDICT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--net", type=Path, required=True,
                   help="transplant net folder (holds net.json); for a coordinator or Predict service address "
                        "use python -m coordinator.serving predict")
    p.add_argument("--category", default=None, help="category route to run (required unless --all-categories)")
    p.add_argument("--task", default="classification", help="task module (default: %(default)s)")
    p.add_argument("--all-categories", action="store_true",
                   help="score every category the net serves for --task and rank them (default: off)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for segmentation overlay PNGs (default: none written)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")


def _routes(net: Any, args: argparse.Namespace) -> list[str]:
    if args.all_categories:
        cats = sorted(c for c, t in net.routes if t == args.task)
        if not cats:
            raise ValueError(f"no category is served for task {args.task!r}; tasks: {', '.join(sorted(net.tasks))}")
        return cats
    if not args.category:
        raise ValueError("give --category C (or --all-categories)")
    check_route(net, args.category, args.task)
    return [args.category]


def _score_files(net: Any, files: list[Path], category: str, task: str, batch_size: int
                 ) -> dict[Path, dict[str, Any]]:
    """file -> result dict or {"error": message}; images are batched, bad files skipped."""
    prep, results, good = preprocessing(net, category), {}, []
    for f in files:
        try:
            good.append((f, load_image(f, prep)))
        except ValueError as exc:
            results[f] = {"error": str(exc)}
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        batch = torch.stack([x for _, x in chunk])
        for (f, _), res in zip(chunk, predict_batch(net, batch, category, task)):
            results[f] = res
    return results


def _line(f: Path, category: str, task: str, res: dict[str, Any], out: Path | None) -> dict[str, Any]:
    if "error" in res:
        return {"file": str(f), "category": category, "task": task, "error": res["error"]}
    line = {"file": str(f), "category": category, "task": task, "score": res["score"], "label": res["label"]}
    if "probability" in res:
        line["probability"] = res["probability"]
    if "mask" in res:
        line["foreground_fraction"] = res["foreground_fraction"]
        if out is not None:  # the hash keeps same-named files from different folders apart
            tag = hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:8]
            line["overlay"] = str(write_overlay(f, res["mask"], out / f"{f.stem}-{category}-{tag}.png"))
    return line


def _no_net(net: Path) -> str:
    if not net.exists() and re.fullmatch(r"[\w.-]+:\d+", str(net)):  # HOST:PORT, not a folder
        return (f"--net {net} is an address, not a net folder: run `python -m coordinator.serving predict "
                f"--coordinator {net} ...` (a coordinator: its latest promoted net is downloaded and run here) "
                f"or `--server {net}` (a Predict service)")
    return f"no transplant net at {net} (net.json missing)"


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    from transplant.net import TransplantNet

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr  # read at call time (tests swap them)
    try:
        if not (args.net / "net.json").is_file():
            raise ValueError(_no_net(args.net))
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        net = TransplantNet.load(args.net)
        categories = _routes(net, args)
    except (ValueError, KeyError) as exc:
        print(f"transplant predict: error: {exc}", file=stderr)
        return 2
    files = image_files(args.paths)
    if not files:
        print(f"transplant predict: error: no image files in {' '.join(map(str, args.paths))}", file=stderr)
        return 2
    scored = {c: _score_files(net, files, c, args.task, args.batch_size) for c in categories}
    return emit(files, categories, args.task, scored, args, stdout)


def emit(files: list[Path], categories: list[str], task: str, scored: dict[str, dict[Path, dict[str, Any]]],
         args: argparse.Namespace, stdout: TextIO) -> int:
    """One JSON line per file (ranked with --all-categories); 1 if any file failed. Shared with the
    Predict service's client (coordinator.serving.client), so both print the same lines."""
    failed = False
    for f in files:
        lines = [_line(f, c, task, scored[c][f], args.out) for c in categories]
        failed |= any("error" in ln for ln in lines)
        if args.all_categories and "error" not in lines[0]:
            ranking = sorted(lines, key=lambda ln: -ln["score"])
            lines = [{**ranking[0], "ranking": [{k: ln[k] for k in ("category", "score", "label")} for ln in ranking]}]
        print(json.dumps(lines[0]), file=stdout, flush=True)
    return 1 if failed else 0
