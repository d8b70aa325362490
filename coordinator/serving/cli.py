"""`python -m coordinator.serving serve|predict`: a Predict replica, and its command-line client."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from common.bearer import ADMIN_TOKEN_ENV, CLIENT_TOKEN_ENV
from coordinator.serving.images import MIB, ImageLimits
from coordinator.serving.server import ServingConfig

_D, _L = ServingConfig("-"), ImageLimits()  # the defaults, shown by --help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordinator.serving",
                                     description="Predictions from the latest promoted transplant net over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands.add_parser("serve", help="run one Predict replica until SIGTERM/SIGINT",
                                      formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    _predict_parser(commands.add_parser("predict", help="JSON lines for image files, from a server",
                                        formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    return parser


def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the coordinator's object store URL (local:///path or s3://...)")
    p.add_argument("--net", default=None, help="net to serve; none: the one committed most recently")
    p.add_argument("--host", default=_D.host, help="interface to listen on")
    p.add_argument("--port", type=int, default=_D.port, help="gRPC port (0: any free port)")
    p.add_argument("--poll", type=float, default=_D.poll_s, metavar="S", help="seconds between checks for a new version")
    p.add_argument("--max-batch", type=int, default=_D.max_batch, help="images per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=_D.max_wait_s * 1000,
                   help="how long a batch waits for more requests to its route")
    p.add_argument("--max-images", type=int, default=_L.max_images, help="images in one request")
    p.add_argument("--max-image-mib", type=float, default=_L.max_image_bytes / MIB, help="bytes of one encoded image")
    p.add_argument("--max-request-mib", type=float, default=_L.max_request_bytes / MIB,
                   help="bytes of one request (memory bound: --rpc-threads x this)")
    p.add_argument("--max-pixels", type=int, default=_L.max_pixels, help="width x height an image may declare")
    p.add_argument("--rpc-threads", type=int, default=_D.rpc_threads, help="requests handled at once")
    p.add_argument("--auth-file", type=Path, default=None,
                   help="the coordinator's auth file; client and admin tokens may call; none: no authentication")
    p.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM): serve TLS")
    p.add_argument("--tls-key", type=Path, default=None, help="private key of --tls-cert (PEM)")
    p.add_argument("--metrics-port", type=int, default=9102, help="Prometheus /metrics port (0: any free, -1: none)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="interface of the /metrics endpoint")


def _predict_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (searched recursively)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="HOST:PORT", help="a Predict service (client token)")
    where.add_argument("--coordinator", metavar="HOST:PORT",
                       help="a coordinator: download its latest promoted net into --cache and run it here (admin token)")
    p.add_argument("--category", default=None, help="category route (required unless --all-categories)")
    p.add_argument("--task", default="classification", help="task module")
    p.add_argument("--all-categories", action="store_true", help="score every category served for --task, ranked")
    p.add_argument("--out", type=Path, default=None, help="folder for segmentation overlay PNGs; none: not written")
    p.add_argument("--batch-size", type=int, default=32, help="images per request (or forward pass)")
    p.add_argument("--name", default=None, help="with --coordinator: the net; none: the newest")
    p.add_argument("--cache", type=Path, default=Path("outputs/nets"), help="with --coordinator: where nets are kept")
    p.add_argument("--token-file", type=Path, default=None,
                   help=f"token file; none: ${CLIENT_TOKEN_ENV} with --server, ${ADMIN_TOKEN_ENV} with --coordinator")
    p.add_argument("--tls-ca", type=Path, default=None, help="CA (PEM) of the server's certificate: use TLS")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call")


def serve(args: argparse.Namespace) -> int:
    from coordinator.serving.server import start_serving
    from common.allocator import keep_freed_buffers
    from transplant.runtime import configure_threads

    configure_threads()
    keep_freed_buffers()
    limits = ImageLimits(max_images=args.max_images, max_image_bytes=int(args.max_image_mib * MIB),
                         max_request_bytes=int(args.max_request_mib * MIB), max_pixels=args.max_pixels)
    config = ServingConfig(args.store, args.net, args.host, args.port, args.poll, args.max_batch,
                           args.max_wait_ms / 1000, limits, args.rpc_threads, args.auth_file, args.tls_cert,
                           args.tls_key, None if args.metrics_port < 0 else args.metrics_port, args.metrics_host)
    handle = start_serving(config)
    served = handle.holder.peek()
    print(f"Predict listening on {args.host}:{handle.port}; serving "
          f"{f'net {served.name!r} v{served.version}' if served else 'nothing yet (no promoted net)'}", flush=True)
    if handle.metrics_port is not None:
        print(f"metrics on http://{args.metrics_host}:{handle.metrics_port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    handle.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            return serve(args)
        except (OSError, ValueError) as exc:
            print(f"serve: error: {exc}", file=sys.stderr)
            return 2
    from coordinator.serving.client import run_predict

    return run_predict(args)
