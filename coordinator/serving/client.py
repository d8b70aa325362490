"""`python -m coordinator.serving predict`: the same JSON lines as `transplant predict`, from a server.

With `--server HOST:PORT` the image files are sent, encoded as they are on disk, to a Predict service
(a client token); nothing is decoded here. With `--coordinator HOST:PORT` the latest promoted net is
downloaded once (an admin token; every module checked as `admin download` does) into `--cache` and
run locally by `transplant predict`.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any, TextIO

import grpc
import numpy as np
import torch
from PIL import Image

from common.bearer import ADMIN_TOKEN_ENV, CLIENT_TOKEN_ENV, read_token
from common.security import ClientSecurity
from protos.nt.v1 import predict_pb2, predict_pb2_grpc
from transplant.predict import image_files
from transplant.predict_cli import emit

REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)  # the image's fault


def _security(args: argparse.Namespace, env: str) -> ClientSecurity:
    return ClientSecurity.from_files(read_token(args.token_file, env), args.tls_ca)


def _mask(png: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(png)) as im:
        return torch.from_numpy(np.asarray(im, dtype=np.int64))


def _result(p: predict_pb2.Prediction, segmentation: bool) -> dict[str, Any]:
    res: dict[str, Any] = {"score": p.score, "label": p.label}
    if not segmentation:
        res["probability"] = p.probability
    elif p.mask_png:
        res.update(foreground_fraction=p.foreground_fraction, mask=_mask(p.mask_png))
    else:
        res.update(foreground_fraction=p.foreground_fraction)
    return res


def _ask(stub: predict_pb2_grpc.PredictStub, files: list[Path], category: str, task: str, seg: bool,
         timeout: float) -> dict[Path, dict[str, Any]]:
    """Results per file; a refused request is retried file by file, so the error names its image."""
    request = predict_pb2.PredictRequest(category=category, task=task, images=[f.read_bytes() for f in files],
                                         want_masks=seg)
    try:
        reply = stub.Predict(request, timeout=timeout)
    except grpc.RpcError as exc:
        if exc.code() not in REFUSED:
            raise
        if len(files) == 1:
            return {files[0]: {"error": f"{files[0]}: {exc.details().replace('image 0: ', '')}"}}
        return {f: r for one in files for f, r in _ask(stub, [one], category, task, seg, timeout).items()}
    return {f: _result(p, seg) for f, p in zip(files, reply.predictions)}


def _requests(files: list[Path], max_images: int, max_bytes: int) -> list[list[Path]]:
    """Files grouped into requests within the server's image count and byte limits (a file over the
    byte limit goes alone, and the server's refusal becomes its error line)."""
    budget = max_bytes - 64 * 1024 if max_bytes else 0  # room for the route names and framing
    groups: list[list[Path]] = [[]]
    size = 0
    for f in files:
        n = f.stat().st_size
        if groups[-1] and (len(groups[-1]) >= max_images or (budget and size + n > budget)):
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += n
    return [g for g in groups if g]


def predict_remote(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    import json

    files = image_files(args.paths)
    if not files:
        print(f"predict: error: no image files in {' '.join(map(str, args.paths))}", file=stderr)
        return 2
    channel = _security(args, CLIENT_TOKEN_ENV).channel(args.server)
    stub = predict_pb2_grpc.PredictStub(channel)
    try:
        routes = stub.ListRoutes(predict_pb2.ListRoutesRequest(), timeout=args.timeout)
        kinds = {(r.category, r.task): json.loads(r.output_json)["kind"] for r in routes.routes}
        categories = sorted(c for c, t in kinds if t == args.task) if args.all_categories else [args.category]
        if not categories or not categories[0] or (categories[0], args.task) not in kinds:
            raise ValueError(f"the server's net ({routes.net} v{routes.version}) does not serve "
                             f"({args.category or 'any category'}, {args.task}); it serves "
                             f"{', '.join(f'{c}/{t}' for c, t in sorted(kinds))}")
        unreadable = {f: {"error": f"{f}: no such file"} for f in files if not f.is_file()}
        groups = _requests([f for f in files if f not in unreadable], max(1, min(routes.max_images, args.batch_size)),
                           routes.max_request_bytes)
        scored = {}
        for c in categories:
            seg = kinds[(c, args.task)] == "segmentation"
            masks = seg and args.out is not None  # masks travel only when overlays are wanted
            scored[c] = {**unreadable, **{f: r for group in groups
                                          for f, r in _ask(stub, group, c, args.task, masks, args.timeout).items()}}
    except grpc.RpcError as exc:
        print(f"predict: error: {args.server}: {exc.code().name}: {exc.details()}", file=stderr)
        return 2
    except ValueError as exc:
        print(f"predict: error: {exc}", file=stderr)
        return 2
    finally:
        channel.close()
    return emit(files, categories, args.task, scored, args, stdout)


def download_net(args: argparse.Namespace) -> Path:
    """The coordinator's latest promoted net under --cache/<name>/v<version> (downloaded once)."""
    from common.registry_client import download
    from coordinator.netfetch import build_net, save_net
    from protos.nt.v1 import control_pb2, control_pb2_grpc, registry_pb2_grpc

    channel = _security(args, ADMIN_TOKEN_ENV).channel(args.coordinator)
    try:
        net = control_pb2_grpc.ControlStub(channel).GetNet(control_pb2.GetNetRequest(name=args.name or ""),
                                                            timeout=args.timeout)
        if not net.version:
            raise ValueError(f"the coordinator at {args.coordinator} has no promoted net yet")
        target = Path(args.cache) / net.name / f"v{net.version}"
        if not (target / "net.json").is_file():
            registry = registry_pb2_grpc.ModuleRegistryStub(channel)
            save_net(net, build_net(net, lambda module_id: download(registry, module_id)), target)
        return target
    finally:
        channel.close()


def predict_from_coordinator(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from transplant.predict_cli import run

    try:
        args.net = download_net(args)
    except grpc.RpcError as exc:
        print(f"predict: error: {args.coordinator}: {exc.code().name}: {exc.details()}", file=stderr)
        return 2
    except ValueError as exc:
        print(f"predict: error: {exc}", file=stderr)
        return 2
    print(f"predict: net {args.net}", file=stderr)
    return run(args, stdout, stderr)


def run_predict(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if not args.all_categories and not args.category:
        print("predict: error: give --category C (or --all-categories)", file=stderr)
        return 2
    if args.server:
        return predict_remote(args, stdout, stderr)
    return predict_from_coordinator(args, stdout, stderr)


__all__ = ["download_net", "predict_remote", "run_predict"]
