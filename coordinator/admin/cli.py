"""Admin CLI: `python -m coordinator.admin --coordinator HOST:PORT [--token-file FILE] [--tls-ca FILE] <command>`.

    submit   start a transplant job (optionally --watch it); --method auto (the default) tries every candidate
    jobs     table of jobs (--json: every field, every candidate's figures)
    watch    live progress bar of one job until it ends
    cancel   cancel a job
    promote  force an evaluated (e.g. REJECTED) job's result into its net, recorded as forced
    net      the transplant net: every route with its provenance (--json)
    rollback commit a new version of a net equal to an older one
    sites    the sites the coordinator knows: categories, tasks, input sizes, channels (--json)
    modules  every stored module: site, category, role, task, input, channels, sha256 (--json)
    base     publish a shared base net sites start from (`base publish`), list the bases (`base list`)
    download write a runnable TransplantNet folder (TransplantNet.load(DIR)); net.json carries provenance

The admin token comes from --token-file or $TRANSPLANT_ADMIN_TOKEN (see `python -m coordinator token new`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from tqdm import tqdm

from coordinator import auth
from common.errors import DownloadError
from common.registry_client import download
from coordinator.admin import views
from coordinator.job_states import STATES, TERMINAL_PB
from common.patterns import BASE_SITE, MODULE_ROLES
from protos.nt.v1 import control_pb2, control_pb2_grpc, registry_pb2, registry_pb2_grpc

MAX_MESSAGE = 64 << 20


class AdminError(Exception):
    """Printed as `error: ...` with exit code 2."""


def _state(value: int) -> str:
    return control_pb2.JobState.Name(value)


def _metrics(metrics) -> str:
    return ", ".join(f"{m.name}={m.value:.2f}" for m in metrics) or "-"


def _security(args) -> auth.ClientSecurity:
    return auth.ClientSecurity.from_files(auth.read_token(args.token_file, auth.ADMIN_TOKEN_ENV),
                                          args.tls_ca, args.tls_cert, args.tls_key)


def _stubs(address: str, security: auth.ClientSecurity = auth.PLAINTEXT):
    channel = security.channel(address, options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
    return channel, control_pb2_grpc.ControlStub(channel), registry_pb2_grpc.ModuleRegistryStub(channel)


def cmd_submit(args, control, registry) -> int:
    spec = control_pb2.TransplantJobSpec(
        category=args.category, task=args.task, method=args.method, samples=args.samples,
        adapter=control_pb2.AdapterConfig(layers=args.layers, kernel_size=args.kernel, reorder=args.reorder),
        seed=args.seed, teacher_site_id=args.teacher_site, generic_site_id=args.generic_site, steps=args.steps,
        net=args.net)
    if args.max_gap is not None:
        spec.max_gap = args.max_gap
    if not (args.generic_site or args.net):
        raise SystemExit("submit: give --generic-site SITE or --net NAME")
    job = control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec), timeout=args.timeout).job
    print(f"submitted {job.job_id} ({_state(job.state)})")
    if args.watch:
        return _watch(control, job.job_id)
    return 0


def cmd_jobs(args, control, registry) -> int:
    states = [control_pb2.JobState.Value(s) for s in args.state]
    jobs = control.ListJobs(control_pb2.ListJobsRequest(states=states, limit=args.limit), timeout=args.timeout).jobs
    docs = [views.job_doc(j) for j in jobs]
    if args.json:
        return _print_json(docs)
    _table(views.JOB_HEADER, [views.job_cells(d) for d in docs])
    return 0


def cmd_promote(args, control, registry) -> int:
    reply = control.PromoteJob(control_pb2.PromoteJobRequest(job_id=args.job), timeout=args.timeout)
    print(f"{reply.job.job_id}: {reply.job.promoted}")
    return 0


def cmd_rollback(args, control, registry) -> int:
    net = control.RollbackNet(control_pb2.RollbackNetRequest(name=args.net, version=args.version), timeout=args.timeout)
    print(f"net {net.name!r} version {net.version}: {net.note}")
    return 0


def cmd_sites(args, control, registry) -> int:
    modules = _module_docs(args, registry)
    docs = [views.site_doc(s, modules)
            for s in control.ListSites(control_pb2.ListSitesRequest(), timeout=args.timeout).sites]
    if args.json:
        return _print_json(docs)
    _table(views.SITE_HEADER, [views.site_cells(d) for d in docs])
    return 0


def _module_docs(args, registry, site: str = "", category: str = "") -> list[dict]:
    request = registry_pb2.ListModulesRequest(site_id=site, category=category)
    return [views.module_doc(m) for m in registry.List(request, timeout=args.timeout).modules]


def cmd_modules(args, control, registry) -> int:
    docs = sorted(_module_docs(args, registry, args.site, args.category),
                  key=lambda d: (d["site_id"], d["category"], d["role"], d["task"]))
    if args.role:
        docs = [d for d in docs if d["role"] == args.role]
    if args.json:
        return _print_json(docs)
    _table(views.MODULE_HEADER, [views.module_cells(d) for d in docs])
    return 0


def cmd_base(args, control, registry) -> int:
    from coordinator.admin.base import publish_base

    if args.base_command == "list":
        docs = _module_docs(args, registry, BASE_SITE)
        if args.json:
            return _print_json(docs)
        _table(views.MODULE_HEADER, [views.module_cells(d) for d in docs])
        return 0
    for what, reply in publish_base(registry, args.name, Path(args.source), args.timeout):
        print(f"{what}\t{reply.module_id}\t{reply.sha256}")
    print(f"published base {args.name!r}: sites start from it with `site_agent train --init-from {args.name}`")
    return 0


def _print_json(doc) -> int:
    print(json.dumps(doc, indent=2, sort_keys=True))
    return 0


def cmd_watch(args, control, registry) -> int:
    return _watch(control, args.job)


def _watch(control, job_id: str) -> int:
    bar = None
    for event in control.WatchJob(control_pb2.WatchJobRequest(job_id=job_id)):
        if event.total_steps:
            if bar is None:
                bar = tqdm(total=event.total_steps, desc=job_id, unit="step")
            bar.update(event.step - bar.n)
            bar.set_postfix(loss=f"{event.loss:.4g}")
        elif event.state not in TERMINAL_PB:  # the final state is printed from GetJob below
            tqdm.write(f"{job_id}: {_state(event.state)}")
    if bar is not None:
        bar.close()
    job = control.GetJob(control_pb2.GetJobRequest(job_id=job_id))
    print(f"{job_id}: {_state(job.state)}" + (f" - {job.error or job.reason}" if job.error or job.reason else ""))
    if job.metrics:
        print(f"metrics: {_metrics(job.metrics)}")
    if len(job.candidates) > 1:
        print("candidates (* = the result):")
        print("\n".join(views.candidate_lines(views.job_doc(job))))
    if job.net_version:
        print(f"transplant net version {job.net_version}")
    return 0 if job.state == control_pb2.SUCCEEDED else 1


def cmd_cancel(args, control, registry) -> int:
    job = control.CancelJob(control_pb2.CancelJobRequest(job_id=args.job), timeout=args.timeout).job
    print(f"{job.job_id}: {_state(job.state)}")
    return 0


def cmd_net(args, control, registry) -> int:
    net = control.GetNet(control_pb2.GetNetRequest(version=args.version, name=args.name), timeout=args.timeout)
    doc = views.net_doc(net)
    if args.json:
        return _print_json(doc)
    if not net.version:
        print("no transplant net yet: no job has succeeded")
        return 0
    print(f"transplant net {net.name!r} version {net.version}" + (f" ({net.note})" if net.note else ""))
    _table(views.NET_HEADER, [views.route_cells(r) for r in doc["routes"]])
    return 0


def cmd_download(args, control, registry) -> int:
    from coordinator.netfetch import build_net, save_net

    net = control.GetNet(control_pb2.GetNetRequest(version=args.version, name=args.name), timeout=args.timeout)
    if not net.version:
        raise AdminError("no transplant net yet: no job has succeeded")
    transplant_net = build_net(net, lambda module_id: download(registry, module_id))
    path = save_net(net, transplant_net, Path(args.dir))
    print(f"wrote transplant net version {net.version} to {path} "
          f"({len(transplant_net.routes)} category x task pairs); load it with TransplantNet.load({str(path)!r})")
    return 0


def cmd_report(args, control, registry) -> int:
    from coordinator.report import write_report

    directory = write_report(control, Path(args.dir), timeout=args.timeout, name=args.name)
    print(f"wrote {directory / 'index.html'} with quality_matrix.png, quality_vs_samples.png, loss_curves.png")
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not rows:
        print("(none)")


NET_NAME_HELP = "which net: each generic site grows its own, named after it (default: the last one committed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m coordinator.admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coordinator", default="127.0.0.1:50051", help="coordinator HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the admin token (default: ${auth.ADMIN_TOKEN_ENV})")
    parser.add_argument("--tls-ca", type=Path, default=None, help="CA (PEM) of the coordinator's certificate: TLS")
    parser.add_argument("--tls-cert", type=Path, default=None, help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--tls-key", type=Path, default=None, help="private key of --tls-cert (PEM)")
    commands = parser.add_subparsers(dest="command", required=True)
    submit = commands.add_parser("submit", help="start a transplant job")
    submit.add_argument("--category", required=True, help="category whose module is transplanted")
    submit.add_argument("--task", required=True, help="classification or segmentation")
    submit.add_argument("--method", default="auto",
                        help="auto: train every candidate method the data allows and keep the one the site scores "
                             "best; or one method by name (back_distill, direct_learn, lstsq, ...)")
    submit.add_argument("--samples", type=int, default=0, help="labelled samples to use (0: data-free)")
    submit.add_argument("--layers", type=int, default=1, help="adapter conv layers (SubmitJob names the limit if exceeded)")
    submit.add_argument("--kernel", type=int, default=1, choices=(1, 3), help="adapter kernel size")
    submit.add_argument("--reorder", action="store_true", help="start the adapter with a channel permutation")
    submit.add_argument("--teacher-site", required=True, help="site owning the category's teacher net")
    submit.add_argument("--generic-site", default="",
                        help="site owning the generic task module; the result enters the net named after it "
                             "(required unless --net is given)")
    submit.add_argument("--net", default="",
                        help="connect to the task module this transplant net already has for the task, e.g. one "
                             "another site brought (the paper's step 3); the result enters this net")
    submit.add_argument("--steps", type=int, default=0, help="optimisation steps (0: the coordinator's default)")
    submit.add_argument("--max-gap", type=float, default=None,
                        help="points the result may trail its teacher and still enter the net "
                             "(default: the coordinator's --max-gap for the task)")
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--watch", action="store_true", help="watch the job until it ends")
    jobs = commands.add_parser("jobs", help="list jobs, most recent first")
    jobs.add_argument("--state", action="append", default=[], choices=list(STATES),
                      help="only jobs in this state (repeatable)")
    jobs.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    jobs.add_argument("--json", action="store_true", help="print JSON (every field, every candidate)")
    for name, text in (("watch", "live progress of a job until it ends"), ("cancel", "cancel a job"),
                       ("promote", "force an evaluated job's result into its net (recorded as forced)")):
        commands.add_parser(name, help=text).add_argument("job", help="job id (see `jobs`)")
    net = commands.add_parser("net", help="show the transplant net: every route with its provenance")
    net.add_argument("--version", type=int, default=0, help="net version (0: latest)")
    net.add_argument("--name", default="", help=NET_NAME_HELP)
    net.add_argument("--json", action="store_true", help="print JSON (routes with their provenance)")
    rollback = commands.add_parser("rollback", help="commit a new version of a net equal to an older one")
    rollback.add_argument("--net", required=True, help="the net's name (its generic site)")
    rollback.add_argument("--version", type=int, required=True, help="the version to restore")
    sites = commands.add_parser("sites", help="the sites the coordinator knows: endpoints, categories, tasks, "
                                              "input sizes, channels, samples")
    sites.add_argument("--json", action="store_true", help="print JSON")
    modules = commands.add_parser("modules", help="every stored module: site, category, role, task, input size, "
                                                  "channels, sha256")
    modules.add_argument("--site", default="", help="only this site's modules")
    modules.add_argument("--category", default="", help="only this category's")
    modules.add_argument("--role", choices=MODULE_ROLES, help="only this role")
    modules.add_argument("--json", action="store_true", help="print JSON")
    base = commands.add_parser("base", help="shared base nets sites start from (train --init-from NAME)")
    base_commands = base.add_subparsers(dest="base_command", required=True)
    publish = base_commands.add_parser("publish", help="upload a site workspace as base NAME (validated like any "
                                                       "upload)")
    publish.add_argument("--name", required=True, help="the base's name (sites use --init-from NAME)")
    publish.add_argument("--from", dest="source", required=True, metavar="DIR",
                         help="a site workspace (site_agent train/import wrote it): category/, tasks/, site.json")
    listing = base_commands.add_parser("list", help="the published bases' modules")
    listing.add_argument("--json", action="store_true", help="print JSON")
    down = commands.add_parser("download", help="write a runnable transplant net folder")
    down.add_argument("dir", help="folder to write (TransplantNet.save layout)")
    down.add_argument("--version", type=int, default=0, help="net version (0: latest)")
    down.add_argument("--name", default="", help=NET_NAME_HELP)
    report = commands.add_parser("report", help="write PNG plots and a one-page HTML summary of the net")
    report.add_argument("dir", help="folder to write (index.html + PNGs)")
    report.add_argument("--name", default="", help=NET_NAME_HELP)
    return parser


COMMANDS = {"submit": cmd_submit, "jobs": cmd_jobs, "watch": cmd_watch, "cancel": cmd_cancel,
            "promote": cmd_promote, "net": cmd_net, "rollback": cmd_rollback, "sites": cmd_sites,
            "modules": cmd_modules, "base": cmd_base,
            "download": cmd_download, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        security = _security(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    channel, control, registry = _stubs(args.coordinator, security)
    try:
        return COMMANDS[args.command](args, control, registry)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            print(f"error: cannot reach the coordinator at {args.coordinator} ({exc.code().name})", file=sys.stderr)
        elif exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        else:
            print(f"error: {exc.details()}", file=sys.stderr)
        return 2
    except (AdminError, DownloadError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        channel.close()

