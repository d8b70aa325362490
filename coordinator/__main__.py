"""`python -m coordinator serve ...`: run the coordinator until SIGTERM/SIGINT.
`python -m coordinator token new|revoke|list --auth-file FILE ...`: manage access tokens."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from common.allocator import keep_freed_buffers
from transplant.runtime import configure_threads
from coordinator.streams import StreamLimits

GIB = 1 << 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordinator",
                                     description="Network-transplanting coordinator: module registry, "
                                                 "job control and heartbeat over gRPC; jobs run on Ray.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the coordinator until SIGTERM/SIGINT",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    serve.add_argument("--store", required=True,
                       help="object store URL: local:///abs/path or s3://bucket?endpoint=host:port&secure=0 "
                            "(credentials from $TRANSPLANT_S3_ACCESS_KEY / $TRANSPLANT_S3_SECRET_KEY)")
    serve.add_argument("--state-dir", required=True, type=Path,
                       help="folder for the durable job ledger (SQLite) and upload spool files")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    serve.add_argument("--ray-address", default=None,
                       help="Ray cluster to join: 'auto' or HOST:PORT; default: start a local Ray")
    serve.add_argument("--max-concurrent-jobs", type=int, default=2, help="jobs running at once")
    serve.add_argument("--eval-timeout", type=float, default=120.0,
                       help="seconds a site may take to evaluate a learnt adapter")
    serve.add_argument("--max-attempts", type=int, default=3,
                       help="runs per job, counting retries after Ray failures and coordinator restarts")
    serve.add_argument("--max-upload-gib", type=float, default=2.0, help="largest single module upload")
    serve.add_argument("--site-quota-gib", type=float, default=20.0, help="total module bytes per site")
    serve.add_argument("--rpc-threads", type=int, default=16, help="gRPC handler threads (default: %(default)s)")
    serve.add_argument("--streams-per-site", type=int, default=StreamLimits.per_site,
                       help="concurrent uploads one site may hold; more get RESOURCE_EXHAUSTED (default: %(default)s)")
    serve.add_argument("--stream-idle", type=float, default=StreamLimits.idle_s, metavar="S",
                       help="an upload sending nothing for S seconds is dropped (default: %(default)s)")
    serve.add_argument("--stream-deadline", type=float, default=StreamLimits.deadline_s, metavar="S",
                       help="longest whole upload in seconds (default: %(default)s)")
    serve.add_argument("--metrics-port", type=int, default=9100,
                       help="HTTP port of the Prometheus /metrics endpoint (0: any free port, -1: none)")
    serve.add_argument("--metrics-host", default="127.0.0.1", help="interface of the /metrics endpoint")
    serve.add_argument("--quality-margin", type=float, default=5.0,
                       help="points an adapter may trail its teacher before the quality alert fires")
    serve.add_argument("--max-gap", action="append", default=[], metavar="TASK=POINTS", type=_task_gap,
                       help="points of the task's primary metric a result may trail its teacher and still "
                            "enter the net (repeatable; a job's own max_gap wins). Defaults: "
                            + ", ".join(f"{t}={g:g}" for t, g in _default_gaps().items()))
    sec = serve.add_argument_group("security (without --auth-file: no authentication; loopback only!)")
    sec.add_argument("--auth-file", type=Path, default=None,
                     help="JSON file of admin and site token hashes (see `token new`); re-read when it changes")
    sec.add_argument("--coordinator-token-file", type=Path, default=None,
                     help="file holding the token this coordinator presents to sites when calling Evaluate")
    sec.add_argument("--tls-cert", type=Path, default=None, help="server certificate (PEM): serve TLS")
    sec.add_argument("--tls-key", type=Path, default=None, help="private key of --tls-cert (PEM)")
    sec.add_argument("--tls-client-ca", type=Path, default=None,
                     help="CA (PEM) that signs client certificates: mutual TLS, clients must present one")
    sec.add_argument("--tls-ca", type=Path, default=None,
                     help="CA (PEM) that signs the sites' certificates: call sites over TLS")
    from coordinator.tokens import add_token_commands
    add_token_commands(commands)
    return parser


def _default_gaps() -> dict[str, float]:
    from coordinator.promotion import DEFAULT_MAX_GAP
    return DEFAULT_MAX_GAP


def _task_gap(text: str) -> tuple[str, float]:
    task, _, points = text.partition("=")
    try:
        value = float(points)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TASK=POINTS, got {text!r}") from None
    if not task or not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected TASK=POINTS with 0 <= POINTS <= 100, got {text!r}")
    return task, value


def serve(args: argparse.Namespace) -> int:
    from common.security import is_loopback
    from coordinator.server import CoordinatorConfig, start_coordinator
    from coordinator.validation import UploadLimits

    config = CoordinatorConfig(
        store_url=args.store, state_dir=args.state_dir, host=args.host, port=args.port,
        ray_address=args.ray_address, max_concurrent_jobs=args.max_concurrent_jobs,
        eval_timeout_s=args.eval_timeout, max_attempts=args.max_attempts,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port, metrics_host=args.metrics_host,
        quality_margin=args.quality_margin, max_gaps=dict(args.max_gap), auth_file=args.auth_file,
        coordinator_token_file=args.coordinator_token_file, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, tls_ca=args.tls_ca, rpc_threads=args.rpc_threads,
        streams=StreamLimits(args.streams_per_site, args.stream_idle, args.stream_deadline),
        limits=UploadLimits(max_upload_bytes=int(args.max_upload_gib * GIB),
                            site_quota_bytes=int(args.site_quota_gib * GIB)))
    if args.auth_file is None and not is_loopback(args.host):
        print(f"WARNING: no --auth-file: anybody reaching {args.host}:{args.port} may upload, delete, submit "
              "and read everything", file=sys.stderr, flush=True)
    handle = start_coordinator(config)
    print(f"coordinator listening on {args.host}:{handle.port}", flush=True)
    if handle.metrics_port is not None:
        print(f"metrics on http://{args.metrics_host}:{handle.metrics_port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down (running jobs resume on restart)", flush=True)
    handle.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_threads()
    keep_freed_buffers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "token":
        from coordinator.tokens import run_token_command
        return run_token_command(args)
    try:
        return serve(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
