"""`make demo`: the whole system on one machine, every part a separate process talking gRPC on loopback.

A coordinator (local object store, local Ray) and site agents, each training a teacher on its own
partition of the data (digits sites: classification; shapes sites: classification + segmentation),
splitting it and pushing only its modules. One site per data set owns the generic task modules; the
coordinator transplants every other site's category into them by back-distillation on Ray, asks each
site to evaluate its adapter on its own held-out data, and grows the transplant net.

    python -m coordinator.demo --help
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from tqdm import tqdm

from protos.nt.v1 import control_pb2, control_pb2_grpc, registry_pb2, registry_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {control_pb2.SUCCEEDED, control_pb2.FAILED, control_pb2.CANCELLED}


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    data: str                   # site_agent data source, e.g. "digits:3" or "shapes:dog"
    train_args: tuple[str, ...]  # architecture / training flags for `site_agent run`

    @property
    def category(self) -> str:
        return self.data.split(":")[-1]


@dataclass(frozen=True)
class Group:
    """Sites sharing one architecture; the first one's task modules are the generic ones."""

    sites: tuple[SiteSpec, ...]
    tasks: tuple[str, ...]
    image_bytes: int            # bytes of one training image + its labels, as the site stores them

    @property
    def generic(self) -> SiteSpec:
        return self.sites[0]


@dataclass
class DemoOptions:
    workdir: Path = ROOT / "outputs" / "demo"
    samples: int = 20           # labelled samples each site shares (opt-in) for few-shot jobs; 0 = data-free
    steps: int = 600
    quick: bool = False         # 3 digits sites only: what the end-to-end test runs
    timeout_s: float = 1500.0
    groups: list[Group] = field(default_factory=list)


def default_groups(quick: bool) -> list[Group]:
    digits_args = ("--size", "16", "--width", "16", "--depth", "4", "--epochs", "20")
    digits = Group(tuple(SiteSpec(f"site-digit{d}", f"digits:{d}", digits_args) for d in ("3", "5", "8")),
                   ("classification",), image_bytes=16 * 16 + 1)
    if quick:
        return [digits]
    shapes_args = ("--size", "32", "--width", "16", "--depth", "3", "--epochs", "12", "--batch-size", "32",
                   "--n-train", "3000", "--n-test", "400", "--dropout", "0", "--seg-weight", "3")
    shapes = Group(tuple(SiteSpec(f"site-{c}", f"shapes:{c}", shapes_args) for c in ("dog", "cat", "cow")),
                   ("classification", "segmentation"), image_bytes=3 * 32 * 32 + 32 * 32 + 1)
    return [digits, shapes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes with their logs; all are stopped (TERM, then KILL) on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TRANSPLANT_THREADS": "1"}
        child = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                 start_new_session=True)
        self.children[name] = child
        return child

    def log_text(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                tail = "\n".join(self.log_text(name).splitlines()[-15:])
                raise RuntimeError(f"{name} exited with code {child.returncode}; last log lines:\n{tail}")

    def stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def wait_for(condition, what: str, timeout_s: float, procs: Processes, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check_alive()
        result = condition()
        if result:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")


def coordinator_ready(control: control_pb2_grpc.ControlStub) -> bool:
    try:
        control.ListJobs(control_pb2.ListJobsRequest(limit=1), timeout=2)
        return True
    except grpc.RpcError:
        return False


def site_ready(procs: Processes, site: SiteSpec) -> bool:
    return "serving SiteAgent on" in procs.log_text(site.site_id)


def site_modules(registry: registry_pb2_grpc.ModuleRegistryStub, site_id: str) -> list:
    return list(registry.List(registry_pb2.ListModulesRequest(site_id=site_id), timeout=10).modules)


def start_sites(opts: DemoOptions, procs: Processes, address: str) -> None:
    for group in opts.groups:
        for site in group.sites:
            args = ["-m", "site_agent", "run", "--site-id", site.site_id, "--data", site.data,
                    "--workspace", str(opts.workdir / "sites" / site.site_id), "--coordinator", address,
                    "--port", "0", "--metrics-port", "0", "--heartbeat-s", "2", "--no-progress",
                    "--share-samples", str(max(opts.samples, 0)), *site.train_args]
            procs.start(site.site_id, args)


def submit_jobs(opts: DemoOptions, control: control_pb2_grpc.ControlStub) -> list[tuple[Group, SiteSpec, str, str]]:
    jobs = []
    for group in opts.groups:
        for site in group.sites[1:]:
            for task in group.tasks:
                # Exp.2-like settings for classification (3-conv 1x1 adapter, enlarged G is the default
                # for classifiers with samples), Exp.3-like for segmentation (1-conv 1x1 adapter)
                layers = 3 if task == "classification" else 1
                spec = control_pb2.TransplantJobSpec(
                    category=site.category, task=task, method="back_distill", samples=opts.samples,
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


def results_table(jobs, finished, registry, opts: DemoOptions) -> list[dict]:
    rows = []
    for group, site, task, job_id in jobs:
        job = finished[job_id]
        metrics = {m.name: m.value for m in job.metrics}
        primary = "error_rate" if task == "classification" else "pixel_accuracy"
        info = json.loads((opts.workdir / "sites" / site.site_id / "site.json").read_text())
        delivered = sum(m.size_bytes for m in site_modules(registry, site.site_id))  # modules + shared samples
        data_bytes = int(info.get("num_images", 0)) * group.image_bytes
        rows.append({
            "category": site.category, "task": task, "site": site.site_id, "generic": group.generic.site_id,
            "state": control_pb2.JobState.Name(job.state), "error": job.error,
            "metric": primary, "teacher": metrics.get(f"teacher_{primary}"), "transplanted": metrics.get(primary),
            "teacher_iou": metrics.get("teacher_iou"), "transplanted_iou": metrics.get("iou"),
            "bytes_delivered": delivered, "bytes_of_data": data_bytes, "job_id": job_id})
    return rows


def print_table(rows: list[dict]) -> None:
    def fmt(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = ("category", "task", "metric (%)", "teacher", "transplanted", "IoU t/s", "MB delivered",
              "MB of data", "state")
    lines = [header]
    for r in rows:
        iou = f"{fmt(r['teacher_iou'])}/{fmt(r['transplanted_iou'])}" if r["task"] == "segmentation" else ""
        lines.append((r["category"], r["task"], r["metric"], fmt(r["teacher"]), fmt(r["transplanted"]), iou,
                      f"{r['bytes_delivered'] / 1e6:.2f}", f"{r['bytes_of_data'] / 1e6:.2f}", r["state"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r["state"] != "SUCCEEDED":
            print(f"  {r['category']} x {r['task']}: {r['error']}")


def download_net(address: str, directory: Path, name: str) -> Path:
    from coordinator import admin

    code = admin.main(["--coordinator", address, "download", str(directory), "--name", name])
    if code != 0:
        raise RuntimeError("downloading the transplant net failed")
    return directory


def run_demo(opts: DemoOptions) -> list[dict]:
    if opts.workdir.exists():
        shutil.rmtree(opts.workdir)
    (opts.workdir / "logs").mkdir(parents=True)
    opts.groups = opts.groups or default_groups(opts.quick)
    procs = Processes(opts.workdir / "logs")
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    started = time.monotonic()
    try:
        procs.start("coordinator", ["-m", "coordinator", "serve", "--store", f"local://{opts.workdir / 'store'}",
                                    "--state-dir", str(opts.workdir / "coordinator"), "--port", str(port),
                                    "--metrics-port", str(metrics_port), "--max-concurrent-jobs", "2"])
        channel = grpc.insecure_channel(address)
        control = control_pb2_grpc.ControlStub(channel)
        registry = registry_pb2_grpc.ModuleRegistryStub(channel)
        print(f"coordinator starting on {address} (local Ray, store {opts.workdir / 'store'}) ...", flush=True)
        wait_for(lambda: coordinator_ready(control), "the coordinator", 300, procs)
        sites = [s for g in opts.groups for s in g.sites]
        print(f"starting {len(sites)} site agents; each trains a teacher on its own data and pushes its modules",
              flush=True)
        start_sites(opts, procs, address)
        with tqdm(total=len(sites), desc="sites trained, pushed and serving", unit="site") as bar:
            ready: set[str] = set()
            while len(ready) < len(sites):
                if time.monotonic() - started > opts.timeout_s:
                    raise TimeoutError("sites did not get ready in time")
                procs.check_alive()
                for site in sites:
                    if site.site_id not in ready and site_ready(procs, site):
                        ready.add(site.site_id)
                        bar.update(1)
                time.sleep(1)
        time.sleep(3)  # one heartbeat round: the coordinator now knows every site's endpoint
        jobs = submit_jobs(opts, control)
        print(f"submitted {len(jobs)} transplant jobs (back-distillation, {opts.samples} samples each)", flush=True)
        finished = wait_for_jobs(control, [j[3] for j in jobs], procs, opts.timeout_s)
        rows = results_table(jobs, finished, registry, opts)
        nets = {group.generic.site_id: download_net(address, opts.workdir / "nets" / group.generic.site_id,
                                                   group.generic.site_id) for group in opts.groups}
        reports = {name: write_report(address, opts.workdir / "reports" / name, name) for name in nets}
    finally:
        procs.stop_all()
    (opts.workdir / "results.json").write_text(json.dumps(rows, indent=2))
    print()
    print_table(rows)
    print()
    print(f"finished in {time.monotonic() - started:.0f} s. Outputs in {opts.workdir}:")
    for name, net_dir in nets.items():
        print(f"  transplant net grown around {name}'s task modules (runnable, TransplantNet.load): {net_dir}")
        if reports[name] is not None:
            print(f"    its report (HTML + PNG plots): {reports[name] / 'index.html'}")
    print(f"  object store with every module, adapter and net version: {opts.workdir / 'store'}")
    print(f"  results table: {opts.workdir / 'results.json'}; process logs: {opts.workdir / 'logs'}")
    return rows


def write_report(address: str, directory: Path, name: str) -> Path | None:
    from coordinator import admin

    return directory if admin.main(["--coordinator", address, "report", str(directory), "--name", name]) == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coordinator.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DemoOptions.workdir, help="where outputs go (wiped first)")
    parser.add_argument("--samples", type=int, default=DemoOptions.samples,
                        help="labelled samples each site shares for few-shot jobs (0: data-free)")
    parser.add_argument("--steps", type=int, default=DemoOptions.steps, help="training steps per job")
    parser.add_argument("--quick", action="store_true", help="3 digits sites only (a few minutes)")
    parser.add_argument("--timeout", type=float, default=DemoOptions.timeout_s, help="overall limit in seconds")
    args = parser.parse_args(argv)
    opts = DemoOptions(workdir=args.workdir.resolve(), samples=args.samples, steps=args.steps, quick=args.quick,
                       timeout_s=args.timeout)
    try:
        rows = run_demo(opts)
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0 if all(r["state"] == "SUCCEEDED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
