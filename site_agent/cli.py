"""`python -m site_agent`: the site operator's tool (import, train, push, serve, run, list, delete).

Operator errors (bad data source, missing workspace, unreachable coordinator) end with exit
code 2 and a one-line message on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from common.errors import WireError
from common.allocator import keep_freed_buffers
from transplant.runtime import configure_threads

from site_agent.data import NEGATIVES_HELP, SOURCE_HELP
from site_agent.errors import SiteAgentError
from site_agent.import_cli import add_import_args, class_names, cmd_import
from site_agent.workspace import exists, load_info

EXAMPLES = """examples:
  python -m site_agent import --site-id acme --data folder:/data/acme:cat --weights vgg16-cat.pth \
      --workspace ws/acme --coordinator coord.example:50051 --token-file acme.token
  python -m site_agent train --site-id site-3 --data digits:3 --workspace ws/site-3
  python -m site_agent push --workspace ws/site-3 --coordinator 127.0.0.1:50051
  python -m site_agent serve --workspace ws/site-3 --coordinator 127.0.0.1:50051 --port 50061
  python -m site_agent run --site-id site-3 --data digits:3 --workspace ws/site-3 \\
      --coordinator 127.0.0.1:50051 --port 50061
"""


def _train_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("teacher training")
    g.add_argument("--site-id", required=required, help="this site's id, as the coordinator knows it")
    g.add_argument("--data", required=required, metavar="SOURCE", help=f"local data: {SOURCE_HELP}")
    g.add_argument("--category", help="category name pushed to the registry (default: the data set's class)")
    g.add_argument("--size", type=int, default=None, help="image side in pixels (default 16)")
    g.add_argument("--width", type=int, default=None, help="channels of the first stage (default 8)")
    g.add_argument("--depth", type=int, default=None, help="VGG stages, >= 3 (default 3)")
    g.add_argument("--fc", type=int, default=None, help="units of the fully connected layers (default 128)")
    s = g.add_mutually_exclusive_group()
    s.add_argument("--init-from", metavar="BASE",
                   help="start from the shared base the coordinator published (admin base publish): its "
                        "architecture and weights, downloaded and checked (needs --coordinator)")
    s.add_argument("--arch-from", metavar="BASE", help="the architecture of a published base, random initialisation")
    s.add_argument("--like-site", metavar="SITE",
                   help="the architecture of the site whose net this one wants to join, so its modules fit "
                        "(needs --coordinator)")
    g.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    g.add_argument("--batch-size", type=int, default=64, help="default 64")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--cosine", action="store_true",
                   help="decay the learning rate to 0 along a cosine (the benchmark's shapes recipe)")
    g.add_argument("--dropout", type=float, default=None, help="dropout on the fc layers (default 0.5, as VGG)")
    g.add_argument("--seg-weight", type=float, default=1.0,
                   help="weight of the segmentation loss beside classification (default 1)")
    g.add_argument("--seed", type=int, default=0, help="data split and training seed (default 0)")
    g.add_argument("--share-samples", type=int, default=0, metavar="N",
                   help="opt in to share N labelled training samples for few-shot jobs (default 0: none)")
    g.add_argument("--n-train", type=int, default=None,
                   help="shapes sources only: training images (default 1000); refused for other sources")
    g.add_argument("--n-test", type=int, default=None,
                   help="shapes sources only: held-out images (default 400); refused for other sources")
    g.add_argument("--negatives", type=class_names, default=None, metavar="CLASS[,CLASS...]",
                   help=f"what the classifier learns to reject. Default per source: {NEGATIVES_HELP}")



def _coordinator_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--coordinator", required=required, metavar="HOST:PORT", help="the coordinator's gRPC address"
                   + ("" if required else " (given: push after the import)"))
    p.add_argument("--retries", type=int, default=5, help="attempts while the coordinator is unavailable (default 5)")
    g = p.add_argument_group("security (default: plaintext, no token: loopback only)")
    g.add_argument("--token-file", type=Path, metavar="FILE",
                   help="file holding this site's token, sent on every call to the coordinator "
                        "(default: $TRANSPLANT_SITE_TOKEN)")
    g.add_argument("--coordinator-token-sha256", metavar="HEX[,HEX]",
                   help="serve: Evaluate callers must present the coordinator's credential for this site, known by "
                        "its sha256 (`python -m coordinator token site-credential` prints it; two, comma-separated, "
                        "while a rotation rolls out) (default: $TRANSPLANT_COORDINATOR_TOKEN_SHA256; unset: no check)")
    g.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA (PEM) of the coordinator's certificate: use TLS")
    g.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="this site's certificate (PEM): client certificate for mutual TLS, and the SiteAgent "
                        "server's own certificate (serve TLS)")
    g.add_argument("--tls-key", type=Path, metavar="FILE", help="private key of --tls-cert (PEM)")


def _security(args: argparse.Namespace):
    """How to reach the coordinator: token + TLS from the flags (or environment)."""
    from common.bearer import SITE_TOKEN_ENV, read_token
    from common.security import ClientSecurity

    try:
        return ClientSecurity.from_files(read_token(args.token_file, SITE_TOKEN_ENV), args.tls_ca,
                                         args.tls_cert, args.tls_key)
    except ValueError as exc:
        raise SiteAgentError(str(exc)) from None


def _serving(args: argparse.Namespace) -> tuple[str | None, object]:
    """(sha256 of the coordinator's token or None, server TLS credentials or None) for serve/run."""
    import os

    from common.bearer import COORDINATOR_TOKEN_SHA256_ENV
    from common.patterns import SHA256_HEX
    from common.security import server_credentials

    text = (args.coordinator_token_sha256 or os.environ.get(COORDINATOR_TOKEN_SHA256_ENV, "")).strip().lower()
    digests = [d.strip() for d in text.split(",")] if text else []
    if not all(SHA256_HEX.match(d) for d in digests):
        raise SiteAgentError("--coordinator-token-sha256 must be 64 hex digits (two, comma-separated, during a rotation)")
    digest = ",".join(digests) or None
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SiteAgentError("--tls-cert and --tls-key go together")
        try:
            credentials = server_credentials(args.tls_cert, args.tls_key)
        except ValueError as exc:
            raise SiteAgentError(str(exc)) from None
    return digest or None, credentials


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    p.add_argument("--advertise", metavar="HOST:PORT", help="endpoint sent in heartbeats (default HOST:PORT)")
    p.add_argument("--heartbeat-s", type=float, default=5.0, help="seconds between heartbeats (default 5)")
    p.add_argument("--metrics-port", type=int, default=9101,
                   help="HTTP port of the Prometheus /metrics endpoint (default 9101; 0: a free port; -1: none)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface of the /metrics endpoint")


def _workspace_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--workspace", type=Path, required=required, metavar="DIR", help="the site's local workspace")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m site_agent", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Site agent: train a teacher on local data, push its modules (never the data) to the "
                    "coordinator, and evaluate transplanted nets on the site's own held-out data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train a teacher and write the workspace")
    _workspace_arg(p)
    _train_args(p, required=True)
    _coordinator_args(p, required=False)
    p.add_argument("--force", action="store_true", help="retrain over an existing workspace")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("import", help="turn the site's existing PyTorch net into its workspace, evaluate it on the "
                                      "site's data, and push it when --coordinator is given")
    _workspace_arg(p)
    add_import_args(p)
    p.add_argument("--force", action="store_true", help="import over an existing workspace")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _coordinator_args(p, required=False)
    p = sub.add_parser("push", help="upload the category and task modules (+ shared samples)")
    _workspace_arg(p)
    _coordinator_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("serve", help="serve SiteAgent.Evaluate and send heartbeats until SIGTERM/SIGINT")
    _workspace_arg(p)
    _coordinator_args(p)
    _serve_args(p)
    p = sub.add_parser("run", help="train (if the workspace is missing), push, then serve")
    _workspace_arg(p)
    _train_args(p, required=False)
    _coordinator_args(p)
    _serve_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("list", help="list this site's modules in the registry")
    _workspace_arg(p, required=False)
    p.add_argument("--site-id", help="site whose modules to list (default: the workspace's)")
    _coordinator_args(p)
    p = sub.add_parser("delete", help="delete modules of this site from the registry")
    _workspace_arg(p, required=False)
    p.add_argument("--site-id", help="owning site (default: the workspace's)")
    _coordinator_args(p)
    p.add_argument("module_ids", nargs="*", metavar="MODULE_ID", help="modules to delete")
    p.add_argument("--all", action="store_true", help="delete every module of this site")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from site_agent.train import TrainOptions, train_site

    if exists(args.workspace) and not getattr(args, "force", False):
        raise SiteAgentError(f"workspace {args.workspace} already holds a teacher; use --force to retrain")
    shape = {"size": args.size, "width": args.width, "depth": args.depth, "fc": args.fc, "dropout": args.dropout}
    source = _start_source(args)
    if source and any(v is not None for v in shape.values()):  # refused before anything is fetched
        given = ", ".join(f"--{k}" for k, v in shape.items() if v is not None)
        raise SiteAgentError(f"{given}: the architecture comes from {source}; drop them")
    start = _start(args)
    defaults = {"size": 16, "width": 8, "depth": 3, "fc": 128, "dropout": 0.5}
    shape = {k: defaults[k] if v is None else v for k, v in shape.items()}
    opts = TrainOptions(site_id=args.site_id, data=args.data, size=shape["size"], width=shape["width"],
                        depth=shape["depth"], fc=shape["fc"], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, cosine=args.cosine, seed=args.seed,
                        share_samples=args.share_samples, category=args.category, n_train=args.n_train,
                        n_test=args.n_test, negatives=args.negatives, dropout=shape["dropout"],
                        seg_weight=args.seg_weight)
    info, _ = train_site(opts, args.workspace, progress=not args.no_progress, start=start)
    print(f"site {info.site_id}: teacher for category '{info.category}' ({info.data}) -> {args.workspace}"
          + (f", started from {start.source}" + ("" if start.weights is not None else " (architecture)")
             if start is not None else ""))
    for task, metrics in info.teacher_metrics.items():
        print(f"  held-out {task}: " + ", ".join(f"{k} {v:.2f}%" for k, v in metrics.items()))
    print(f"  E||f(I)||_F = {info.feature_norm_mean:.4f} over {info.num_images} training images"
          + (f"; sharing {info.shared_samples} labelled samples" if info.shared_samples else ""))
    return 0


def _start_source(args: argparse.Namespace) -> str:
    """'base:NAME' or 'site:ID' when the architecture comes from the coordinator, else ''."""
    base = getattr(args, "init_from", None) or getattr(args, "arch_from", None)
    site = getattr(args, "like_site", None)
    return f"base:{base}" if base else f"site:{site}" if site else ""


def _start(args: argparse.Namespace):
    """The base or site a teacher starts from (site_agent.start), fetched through the checked client."""
    if not _start_source(args):
        return None
    if not args.coordinator:
        raise SiteAgentError("--init-from, --arch-from and --like-site need --coordinator HOST:PORT")
    from site_agent.client import RegistryClient
    from site_agent.start import fetch_start

    with RegistryClient(args.coordinator, retries=args.retries, security=_security(args)) as registry:
        return fetch_start(registry, base=args.init_from or args.arch_from, like_site=args.like_site,
                           weights=bool(args.init_from))


def cmd_push(args: argparse.Namespace) -> int:
    from site_agent.client import RegistryClient

    load_info(args.workspace)  # "missing workspace" before any network wait
    with RegistryClient(args.coordinator, retries=args.retries, security=_security(args)) as registry:
        ids = registry.push_workspace(args.workspace, progress=not args.no_progress)
    for name, ref in ids.items():
        print(f"{name}\t{ref['module_id']}\t{ref['sha256']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from site_agent.service import start_site_agent

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    coordinator_sha256, credentials = _serving(args)
    handle = start_site_agent(args.workspace, args.coordinator, args.host, args.port, args.heartbeat_s,
                              args.advertise, registry_retries=args.retries,
                              metrics_port=None if args.metrics_port < 0 else args.metrics_port,
                              metrics_host=args.metrics_host, security=_security(args),
                              coordinator_token_sha256=coordinator_sha256, server_credentials=credentials)
    print(f"site {handle.evaluator.info.site_id} serving SiteAgent on {handle.endpoint}", flush=True)
    if handle.metrics_port is not None:
        print(f"metrics on http://{args.metrics_host}:{handle.metrics_port}/metrics", flush=True)
    while not stop.wait(0.5):  # short waits: signal handlers only run between them
        pass
    logging.getLogger("site_agent").info("shutting down")
    handle.stop(grace=5.0)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if exists(args.workspace):
        info = load_info(args.workspace)
        if args.site_id and args.site_id != info.site_id:
            raise SiteAgentError(f"workspace {args.workspace} belongs to site '{info.site_id}', not '{args.site_id}'")
        if args.data and args.data != info.data:
            raise SiteAgentError(f"workspace {args.workspace} was trained on '{info.data}', not '{args.data}'; "
                                 "use another --workspace or `train --force`")
        print(f"site {info.site_id}: using the teacher in {args.workspace}")
    else:
        if not (args.site_id and args.data):
            raise SiteAgentError(f"no workspace at {args.workspace}: --site-id and --data are needed to train one")
        cmd_train(args)
    cmd_push(args)
    return cmd_serve(args)


def _site_id(args: argparse.Namespace) -> str:
    if args.site_id:
        return args.site_id
    if args.workspace is None:
        raise SiteAgentError("give --site-id or --workspace")
    return load_info(args.workspace).site_id


def cmd_list(args: argparse.Namespace) -> int:
    from protos.nt.v1 import common_pb2
    from site_agent.client import RegistryClient

    with RegistryClient(args.coordinator, retries=args.retries, security=_security(args)) as registry:
        modules = registry.list(site_id=_site_id(args))
    for m in modules:
        print(f"{m.module_id}\t{common_pb2.ModuleRole.Name(m.role)}\t{m.category}\t{m.task or '-'}\t{m.size_bytes}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from site_agent.client import RegistryClient

    site_id = _site_id(args)
    if not args.module_ids and not args.all:
        raise SiteAgentError("name MODULE_IDs to delete, or --all")
    with RegistryClient(args.coordinator, retries=args.retries, security=_security(args)) as registry:
        ids = args.module_ids or [m.module_id for m in registry.list(site_id=site_id)]
        for module_id in ids:
            print(f"{module_id}\t{'deleted' if registry.delete(module_id, site_id) else 'not found'}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train, "import": lambda args: cmd_import(args, cmd_push), "push": cmd_push, "serve": cmd_serve, "run": cmd_run, "list": cmd_list, "delete": cmd_delete}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_threads()
    keep_freed_buffers()
    try:
        return COMMANDS[args.command](args)
    except (SiteAgentError, WireError) as exc:  # operator errors: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
