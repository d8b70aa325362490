"""The demo's run: start the coordinator and the sites, submit the jobs, collect the nets and reports.

    python -m demo [--quick] [--base] [--samples N] [--steps N] [--workdir DIR] [--timeout S]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from common.registry_client import download
from coordinator.job_states import TERMINAL_PB as TERMINAL
from demo.processes import ROOT, Processes, free_port, wait_for
from demo.sites import Group, coordinator_ready, default_groups, site_ready, start_base, start_site
from demo.table import Jobs, print_table, results_table
from protos.nt.v1 import control_pb2, control_pb2_grpc, registry_pb2_grpc
from transplant.methods import AUTO, TrainConfig, auto_candidates

MAX_MESSAGE = 64 << 20  # as the admin CLI: net and job-history replies may exceed gRPC's 4 MiB default


@dataclass
class DemoOptions:
    workdir: Path = ROOT / "outputs" / "demo"
    samples: int = 20           # labelled samples each site shares (opt-in) for few-shot jobs; 0 = data-free
    steps: int = TrainConfig().steps  # the library's default, as a job with steps 0 gets
    quick: bool = False         # 3 digits sites only: what the end-to-end test runs
    # each group's sites fine-tune from a base the demo trains (on a category none of them has) and publishes
    # first; off by default: on the digits sites the fine-tuned teachers came out worse than from scratch
    base: bool = False
    timeout_s: float = 1500.0
    groups: list[Group] = field(default_factory=list)


def submit_jobs(opts: DemoOptions, control: control_pb2_grpc.ControlStub) -> Jobs:
    jobs = []
    for group in opts.groups:
        for site in group.sites[1:]:
            for task in group.tasks:
                # method auto: every candidate the data allows is trained and evaluated by the site, the
                # best enters the net if the gate allows; 1-conv 1x1 adapters, where back-distill and the
                # stitching methods are exact (benchmarks/results/paper.md)
                layers = 1
                spec = control_pb2.TransplantJobSpec(
                    category=site.category, task=task, method=AUTO, samples=opts.samples,
                    adapter=control_pb2.AdapterConfig(layers=layers, kernel_size=1, reorder=False),
                    seed=0, teacher_site_id=site.site_id, generic_site_id=group.generic.site_id, steps=opts.steps)
                job = control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec), timeout=30).job
                jobs.append((group, site, task, job.job_id))
    return jobs


def wait_for_jobs(control: control_pb2_grpc.ControlStub, job_ids: list[str], procs: Processes,
                  timeout_s: float) -> dict[str, control_pb2.Job]:
    finished: dict[str, control_pb2.Job] = {}
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(job_ids), desc="transplant jobs", unit="job") as bar:
        while len(finished) < len(job_ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still running after {timeout_s:.0f} s")
            procs.check_alive()
            for job_id in job_ids:
                if job_id in finished:
                    continue
                job = control.GetJob(control_pb2.GetJobRequest(job_id=job_id), timeout=10)
                if job.state in TERMINAL:
                    finished[job_id] = job
                    bar.update(1)
                    bar.set_postfix_str(f"{job.spec.category} x {job.spec.task}: "
                                        f"{control_pb2.JobState.Name(job.state)}")
            time.sleep(1)
    return finished


def download_net(control: control_pb2_grpc.ControlStub, registry: registry_pb2_grpc.ModuleRegistryStub,
                 directory: Path, name: str) -> Path:
    """The net grown around `name`'s task modules, every module checked, saved as a runnable folder."""
    from coordinator.netfetch import build_net

    try:
        net = control.GetNet(control_pb2.GetNetRequest(name=name), timeout=30)
        if not net.version:
            raise ValueError("no transplant net yet: no job has succeeded")
        transplant_net = build_net(net, lambda module_id: download(registry, module_id))
        path = transplant_net.save(directory)
    except (grpc.RpcError, ValueError, OSError) as exc:
        raise RuntimeError(f"downloading the transplant net {name!r} failed: {exc}") from None
    print(f"wrote transplant net version {net.version} to {path} ({len(transplant_net.routes)} category x task pairs)")
    return directory


def write_report(control: control_pb2_grpc.ControlStub, directory: Path, name: str) -> Path | None:
    """HTML + PNG report of one net; None (the demo goes on) if it cannot be written."""
    from coordinator.report import write_report as report

    try:
        report(control, directory, timeout=30.0, name=name)
    except (grpc.RpcError, ValueError, OSError) as exc:
        print(f"error: the report of {name!r} failed: {exc}", file=sys.stderr)
        return None
    return directory


def wait_for_sites(opts: DemoOptions, procs: Processes, registry: registry_pb2_grpc.ModuleRegistryStub,
                   endpoints: dict[str, str], started: float) -> None:
    sites = [s for g in opts.groups for s in g.sites]
    with tqdm(total=len(sites), desc="sites trained, pushed and serving", unit="site") as bar:
        ready: set[str] = set()
        while len(ready) < len(sites):
            if time.monotonic() - started > opts.timeout_s:
                raise TimeoutError("sites did not get ready in time")
            procs.check_alive()
            for site in sites:
                if site.site_id not in ready and site_ready(registry, site, endpoints[site.site_id]):
                    ready.add(site.site_id)
                    bar.update(1)
            time.sleep(1)


def publish_bases(opts: DemoOptions, procs: Processes, registry: registry_pb2_grpc.ModuleRegistryStub) -> None:
    """Train every group's base on the demo's own generated data (in parallel), then publish each as an admin
    would (`admin base publish`): uploaded and validated like any module."""
    from coordinator.admin.base import publish_base

    names = ", ".join(f"{g.base_name} ({g.base_data})" for g in opts.groups)
    print(f"training the shared bases the sites start from: {names}", flush=True)
    for group in opts.groups:
        start_base(procs, group, opts.workdir / "bases" / group.base_name)
    for group in opts.groups:
        procs.finish(group.base_name, opts.timeout_s)
        publish_base(registry, group.base_name, opts.workdir / "bases" / group.base_name, timeout=120)


def run_demo(opts: DemoOptions) -> list[dict[str, Any]]:
    if opts.workdir.exists():
        shutil.rmtree(opts.workdir)
    (opts.workdir / "logs").mkdir(parents=True)
    opts.groups = opts.groups or default_groups(opts.quick)
    procs = Processes(opts.workdir / "logs")
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    started = time.monotonic()
    channel = None
    try:
        procs.start("coordinator", ["-m", "coordinator", "serve", "--store", f"local://{opts.workdir / 'store'}",
                                    "--state-dir", str(opts.workdir / "coordinator"), "--port", str(port),
                                    "--metrics-port", str(metrics_port), "--max-concurrent-jobs", "2"])
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        control = control_pb2_grpc.ControlStub(channel)
        registry = registry_pb2_grpc.ModuleRegistryStub(channel)
        print(f"coordinator starting on {address} (local Ray, store {opts.workdir / 'store'}) ...", flush=True)
        wait_for(lambda: coordinator_ready(control), "the coordinator", 300, procs)
        if opts.base:
            publish_bases(opts, procs, registry)
        sites = [(g, s) for g in opts.groups for s in g.sites]
        print(f"starting {len(sites)} site agents; each trains a teacher on its own data"
              + (" (fine-tuning its group's base)" if opts.base else "") + " and pushes its modules", flush=True)
        endpoints = {}
        for group, site in sites:
            site_port = free_port()
            endpoints[site.site_id] = f"127.0.0.1:{site_port}"
            start_site(procs, group, site, opts.workdir / "sites" / site.site_id, address, site_port, opts.samples,
                       opts.base)
        wait_for_sites(opts, procs, registry, endpoints, started)
        time.sleep(3)  # one heartbeat round: the coordinator now knows every site's endpoint
        jobs = submit_jobs(opts, control)
        print(f"submitted {len(jobs)} transplant jobs (method auto: {len(auto_candidates(opts.samples, True))} "
              f"candidates each, {opts.samples} samples)", flush=True)
        finished = wait_for_jobs(control, [j[3] for j in jobs], procs, opts.timeout_s)
        rows = results_table(jobs, finished, registry, opts.workdir)
        nets = {group.generic.site_id: download_net(control, registry, opts.workdir / "nets" / group.generic.site_id,
                                                   group.generic.site_id) for group in opts.groups}
        reports = {name: write_report(control, opts.workdir / "reports" / name, name) for name in nets}
    finally:
        if channel is not None:
            channel.close()
        procs.stop_all()
    (opts.workdir / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print_table(rows)
    print()
    print(f"finished in {time.monotonic() - started:.0f} s. Outputs in {opts.workdir}:")
    for name, net_dir in nets.items():
        print(f"  transplant net grown around {name}'s task modules (runnable, TransplantNet.load): {net_dir}")
        report = reports[name]
        if report is not None:
            print(f"    its report (HTML + PNG plots): {report / 'index.html'}")
    print(f"  object store with every module, adapter and net version: {opts.workdir / 'store'}")
    print(f"  results table: {opts.workdir / 'results.json'}; process logs: {opts.workdir / 'logs'}")
    for net_dir in list(nets.values())[-1:]:
        print(f"Predict on your own images: python -m transplant predict --net {net_dir} --category CATEGORY "
              "IMAGE_OR_FOLDER...")
        print(f"Serve the latest promoted net: python -m coordinator.serving serve --store "
              f"local://{(opts.workdir / 'store').resolve()}")
    return rows


def main(argv: list[str] | None = None) -> int:
    import demo

    parser = argparse.ArgumentParser(prog="python -m demo", description=demo.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DemoOptions.workdir, help="where outputs go (wiped first)")
    parser.add_argument("--samples", type=int, default=DemoOptions.samples,
                        help="labelled samples each site shares for few-shot jobs (0: data-free)")
    parser.add_argument("--steps", type=int, default=DemoOptions.steps, help="training steps per job")
    parser.add_argument("--quick", action="store_true", help="3 digits sites only (a few minutes)")
    parser.add_argument("--timeout", type=float, default=DemoOptions.timeout_s, help="overall limit in seconds")
    parser.add_argument("--base", action="store_true",
                        help="first train and publish a shared base per group (digits:0, shapes:horse); every site "
                             "fine-tunes from it (site_agent run --init-from) instead of training from scratch")
    args = parser.parse_args(argv)
    opts = DemoOptions(workdir=args.workdir.resolve(), samples=args.samples, steps=args.steps, quick=args.quick,
                       timeout_s=args.timeout, base=args.base)
    try:
        rows = run_demo(opts)
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0 if all(r["state"] == "SUCCEEDED" for r in rows) else 1
