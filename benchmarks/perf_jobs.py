"""Job figures for `make bench-perf`: transplant jobs per hour on 1 and 2 Ray workers, where a job's time
goes, and an `auto` job against its slowest single candidate.

Everything runs for real: a coordinator (in this process) with a local store and a local Ray, two site
agents (digits 3 as the generic site, digits 5 as the new category, 20 shared samples) that push their
modules over gRPC and evaluate every candidate on their held-out data.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

ADAPTER_LAYERS, ADAPTER_KERNEL = 2, 1
STEPS = 300
SAMPLES = 20
POLL_S = 0.5
SITE_NET = {"size": 16, "width": 8, "depth": 3}  # both sites' nets, in the Ray benchmark and the bare one


def _ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TRANSPLANT_THREADS": "1"}})


@contextmanager
def cluster(workdir: Path, name: str, workers: int) -> Iterator:
    """A coordinator running `workers` jobs at once and the two sites; yields its Control stub."""
    from coordinator.server import CoordinatorConfig, start_coordinator
    from protos.nt.v1 import control_pb2_grpc
    from site_agent.client import RegistryClient
    from site_agent.service import start_site_agent
    from site_agent.train import TrainOptions, train_site

    _ensure_ray()
    handle = start_coordinator(CoordinatorConfig(store_url=f"local://{workdir / f'store-{name}'}",
                                                 state_dir=workdir / f"state-{name}", port=0,
                                                 max_concurrent_jobs=workers))
    sites = []
    try:
        for site_id, digit in (("generic", "3"), ("new", "5")):
            workspace = workdir / f"site-{site_id}"  # trained once, pushed to every cluster
            if not workspace.exists():
                train_site(TrainOptions(site_id=site_id, data=f"digits:{digit}", **SITE_NET,
                                        epochs=5, share_samples=SAMPLES), workspace, progress=False)
            with RegistryClient(handle.address) as registry:
                registry.push_workspace(workspace, progress=False)
            sites.append(start_site_agent(workspace, handle.address, heartbeat_s=0.5))
        time.sleep(1.5)
        with grpc.insecure_channel(handle.address) as channel:
            yield control_pb2_grpc.ControlStub(channel)
    finally:
        for site in sites:
            site.stop()
        handle.stop()


def job_spec(method: str, samples: int = 0):
    from protos.nt.v1 import control_pb2

    adapter = control_pb2.AdapterConfig(layers=ADAPTER_LAYERS, kernel_size=ADAPTER_KERNEL)
    return control_pb2.TransplantJobSpec(category="5", task="classification", method=method, steps=STEPS,
                                         samples=samples, adapter=adapter, teacher_site_id="new",
                                         generic_site_id="generic")


def run_jobs(control, specs: list) -> tuple[float, list]:
    """Submits every spec at once; (wall seconds until the last ended, the ended jobs)."""
    from coordinator.job_states import TERMINAL_PB
    from protos.nt.v1 import control_pb2

    start = time.time()  # the coordinator stamps `finished` on the same wall clock
    ids = [control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id for spec in specs]
    while True:
        # a slow poll: this process also runs the coordinator, and on 2 cores a fast one (8 GetJob calls
        # every 50 ms) took CPU from the workers it measures; the end time comes from the jobs' own stamps
        time.sleep(POLL_S)
        jobs = [control.GetJob(control_pb2.GetJobRequest(job_id=i)) for i in ids]
        if all(job.state in TERMINAL_PB for job in jobs):
            break
    seconds = max(job.finished for job in jobs) - start
    # identical jobs: the first enters the net, every repeat is REJECTED as not better; both ran in full
    failed = [j for j in jobs if j.state not in (control_pb2.SUCCEEDED, control_pb2.REJECTED)]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark job(s) failed: {failed[0].error}")
    return seconds, jobs


def breakdown(jobs: list) -> dict[str, float]:
    """Mean seconds per job: waiting for a driver, training (the candidates' own clocks), the rest of its run
    (Ray dispatch, module fetch, problem set-up incl. pseudo-gradients, storing, the site's evaluation)."""
    wait = statistics.fmean(j.started - j.created for j in jobs)
    run = statistics.fmean(j.finished - j.started for j in jobs)
    train = statistics.fmean(max(c.seconds for c in j.candidates) for j in jobs)
    return {"queue_s": wait, "run_s": run, "train_s": train, "other_s": run - train}


def jobs_per_hour(workdir: Path, jobs: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for workers in (1, 2):
        with cluster(workdir, f"w{workers}", workers) as control:
            run_jobs(control, [job_spec("back_distill")] * workers)  # warm-up: Ray workers start, import torch
            seconds, done = run_jobs(control, [job_spec("back_distill")] * jobs)
        figures[f"jobs_per_hour_{workers}_worker{'s' if workers > 1 else ''}"] = jobs / seconds * 3600
        figures.update({f"job_{k}_{workers}w": v for k, v in breakdown(done).items()})
    figures["jobs_2_over_1_worker"] = figures["jobs_per_hour_2_workers"] / figures["jobs_per_hour_1_worker"]
    figures["jobs_benchmark_jobs"] = jobs
    return figures


def _bare_trainer(jobs: int, ready, go, out) -> None:
    """One process doing what a Ray worker does for a benchmark job, minus Ray, gRPC and the sites: set up
    the problem (pseudo-gradient pool included) and train, `jobs` times; reports its seconds."""
    from transplant.architectures import CLASSIFICATION, teacher_specs, vgg_small
    from transplant.data.digits import load_digits_category
    from transplant.job import JobConfig, make_problem, run_job
    from transplant.runtime import configure_threads
    from transplant.teacher import TeacherTraining, train_teacher

    configure_threads(1)
    nets = []
    for digit in (3, 5):  # the generic and the new site's nets of the job benchmark
        data = load_digits_category(digit, seed=0, size=SITE_NET["size"])
        cfg = vgg_small(width=SITE_NET["width"], depth=SITE_NET["depth"], image_size=SITE_NET["size"], in_channels=1)
        nets.append(train_teacher(teacher_specs(cfg, (CLASSIFICATION,)), data.train.images, data.train.labels,
                                  config=TeacherTraining(epochs=1, seed=digit)))
    generic, new = nets
    config = JobConfig.create(task=CLASSIFICATION, method="back_distill", adapter_layers=ADAPTER_LAYERS,
                              kernel_size=ADAPTER_KERNEL, steps=STEPS)
    ready.set()
    go.wait()
    start = time.perf_counter()
    for _ in range(jobs):
        run_job(config, make_problem(config, new.category, new.task_module(CLASSIFICATION),
                                     generic.task_module(CLASSIFICATION), 1.0,
                                     generic_category_module=generic.category))
    out.put(time.perf_counter() - start)


def bare_scaling(jobs: int) -> dict[str, float]:
    """The same training in 1 and in 2 plain processes side by side (no Ray, no coordinator, no sites):
    the machine's own limit for `jobs_2_over_1_worker` (2 = two cores that never get in each other's way)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    seconds = {}
    for processes in (1, 2):
        out, go = ctx.Queue(), ctx.Event()
        readies = [ctx.Event() for _ in range(processes)]
        procs = [ctx.Process(target=_bare_trainer, args=(jobs, r, go, out)) for r in readies]
        for proc in procs:
            proc.start()
        for ready in readies:
            ready.wait()
        go.set()
        times = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
        seconds[processes] = max(times)
    per_hour = {n: n * jobs / seconds[n] * 3600 for n in (1, 2)}
    return {"bare_jobs_per_hour_1_process": per_hour[1], "bare_jobs_per_hour_2_processes": per_hour[2],
            "bare_2_over_1_process": per_hour[2] / per_hour[1]}


def auto_figures(workdir: Path) -> dict[str, float | str]:
    """Wall time (start to end of its run) of one `auto` job with shared samples, and of each of its
    candidates alone as a single-method job, on the same 2-worker Ray; jobs run one at a time."""
    from transplant.methods import auto_candidates

    methods = auto_candidates(SAMPLES)
    with cluster(workdir, "auto", 1) as control:
        run_jobs(control, [job_spec("auto", SAMPLES)])  # warm-up
        _, (auto,) = run_jobs(control, [job_spec("auto", SAMPLES)])
        singles = {}
        for method in methods:
            _, (job,) = run_jobs(control, [job_spec(method, SAMPLES)])
            singles[method] = job.finished - job.started
        jobs_run = 2 + len(methods)
    slowest = max(singles, key=lambda m: singles[m])
    auto_s = auto.finished - auto.started
    stored = sum(p.stat().st_size for p in (workdir / "store-auto" / "docs").rglob("*.json"))
    return {"auto_job_s": auto_s, "auto_candidates": len(methods), "auto_slowest_candidate": slowest,
            "ledger_bytes_per_job": (workdir / "state-auto" / "ledger.sqlite3").stat().st_size / jobs_run,
            "manifest_bytes_per_job": stored / jobs_run,  # module records and net versions, sites' included
            "auto_slowest_candidate_s": singles[slowest],
            "auto_over_slowest_candidate": auto_s / singles[slowest],
            "auto_candidate_train_s": {c.method: c.seconds for c in auto.candidates},
            "auto_single_job_s": singles}


__all__ = ["auto_figures", "jobs_per_hour"]
