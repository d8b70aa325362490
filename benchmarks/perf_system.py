"""System figures for `make bench-perf`: module transfer speed and memory, and job throughput on Ray.

- upload: a large task module (500 MB by default) pushed through ModuleRegistry.Upload from a file,
  in 1 MiB chunks, to a coordinator in another process; the client's and the coordinator's peak RSS
  are sampled from /proc during the upload. The same bytes through a bare gRPC stream (no protobuf
  messages, no validation, no storage) give the loopback ceiling.
- jobs per hour: identical small transplant jobs (digits, 2-layer adapter) with 1 and 2 concurrent
  Ray workers, each evaluated by a real site agent.
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Peak RSS of some processes above their level when sampling started."""

    def __init__(self, pids: list[int], every_s: float = 0.01):
        self.pids, self.every_s = pids, every_s
        self.base = {pid: rss_mb(pid) for pid in pids}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    self.peak[pid] = max(self.peak[pid], rss_mb(pid))
                except FileNotFoundError:
                    pass
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def extra(self, pid: int) -> float:
        return self.peak[pid] - self.base[pid]


def write_big_module(directory: Path, megabytes: int) -> tuple[str, Path]:
    """A valid task-module spec with one large linear layer, weights written tensor by tensor."""
    code = f"""
import sys, torch
from safetensors.torch import save_file
from transplant.spec.builder import SpecBuilder
features = 1000
out = max(1, ({megabytes} << 20) // (4 * features))
b = SpecBuilder("bench.big", (10, 10, 10))
b.add("flatten", "flatten")
b.add("fc", "linear", in_features=features, out_features=out, bias=False)
spec = b.build(max_params=10**9)
open(sys.argv[1], "w").write(spec.dumps())
save_file({{"fc.weight": torch.zeros(out, features)}}, sys.argv[2])
"""
    spec_path, weights_path = directory / "big.json", directory / "big.safetensors"
    subprocess.run([sys.executable, "-c", code, str(spec_path), str(weights_path)], check=True, cwd=ROOT)
    return spec_path.read_text(), weights_path


UPLOAD_CLIENT = """
import hashlib, sys, time, json
import grpc
from protos.nt.v1 import common_pb2, registry_pb2, registry_pb2_grpc, chunk_pb2
address, spec_path, weights_path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
digest, size = hashlib.sha256(), 0
with open(weights_path, "rb") as f:
    for piece in iter(lambda: f.read(chunk), b""):
        digest.update(piece); size += len(piece)
header = registry_pb2.UploadHeader(site_id="bench", category="big", role=common_pb2.TASK, task="classification",
                                   spec_json=open(spec_path).read(), sha256=digest.hexdigest(), size_bytes=size)
def requests():
    yield registry_pb2.UploadRequest(header=header)
    offset = 0
    with open(weights_path, "rb") as f:
        for piece in iter(lambda: f.read(chunk), b""):
            yield registry_pb2.UploadRequest(chunk=chunk_pb2.Chunk(data=piece, offset=offset)); offset += len(piece)
channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
sys.stdin.readline()  # wait until the sampler runs
start = time.perf_counter()
reply = registry_pb2_grpc.ModuleRegistryStub(channel).Upload(requests(), timeout=1800)
print(json.dumps({"seconds": time.perf_counter() - start, "size": size, "module_id": reply.module_id}), flush=True)
"""

RAW_CLIENT = """
import sys, time, json
import grpc
address, weights_path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
push = channel.stream_unary("/bench.Sink/Push")
def pieces():
    with open(weights_path, "rb") as f:
        yield from iter(lambda: f.read(chunk), b"")
start = time.perf_counter()
size = int(push(pieces(), timeout=1800))
print(json.dumps({"seconds": time.perf_counter() - start, "size": size}), flush=True)
"""


def raw_grpc_mb_s(weights: Path) -> float:
    """The same bytes through a bare gRPC client stream into a server that only counts them."""
    def sink(request_iterator, context):
        return str(sum(len(piece) for piece in request_iterator)).encode()

    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Sink", {"Push": grpc.stream_unary_rpc_method_handler(sink)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = subprocess.run([sys.executable, "-c", RAW_CLIENT, f"127.0.0.1:{port}", str(weights), str(CHUNK)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
    finally:
        server.stop(0)
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["size"] / result["seconds"] / 1e6


def upload_figures(megabytes: int) -> dict[str, float]:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        spec_json, weights = write_big_module(tmp_path, megabytes)
        port = free_port()
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "coordinator", "serve", "--store", f"local://{tmp_path / 'store'}",
             "--state-dir", str(tmp_path / "state"), "--port", str(port), "--metrics-port", "-1",
             "--max-upload-gib", "4", "--site-quota-gib", "8"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in coordinator.stdout:  # wait until it serves
                if "coordinator listening" in line:
                    break
            client = subprocess.Popen([sys.executable, "-c", UPLOAD_CLIENT, f"127.0.0.1:{port}",
                                       str(tmp_path / "big.json"), str(weights), str(CHUNK)],
                                      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            time.sleep(3)  # the client has imported grpc and hashed the file
            with RssSampler([client.pid, coordinator.pid]) as sampler:
                client.stdin.write("go\n")
                client.stdin.flush()
                out, _ = client.communicate(timeout=1800)
            result = json.loads(out.strip().splitlines()[-1])
            stored = _verify_stored(tmp_path / "store", weights)
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=60)
        return {
            "upload_module_mb": result["size"] / 1e6,
            "upload_mb_s": result["size"] / result["seconds"] / 1e6,
            "raw_grpc_mb_s": raw_grpc_mb_s(weights),
            "upload_peak_rss_extra_mb": max(sampler.extra(client.pid), sampler.extra(coordinator.pid)),
            "upload_client_peak_rss_extra_mb": sampler.extra(client.pid),
            "upload_coordinator_peak_rss_extra_mb": sampler.extra(coordinator.pid),
            "upload_chunk_mb": CHUNK / (1 << 20),
            "upload_stored_intact": stored,
        }


def _verify_stored(store_root: Path, weights: Path) -> bool:
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for piece in iter(lambda: f.read(CHUNK), b""):
            digest.update(piece)
    from coordinator.store import open_store

    store = open_store(f"local://{store_root}")
    check = hashlib.sha256()
    for piece in store.open_blob(digest.hexdigest()):
        check.update(piece)
    return check.hexdigest() == digest.hexdigest()


def jobs_per_hour(workers: int, jobs: int, workdir: Path) -> float:
    """Wall time of `jobs` identical small transplant jobs with `workers` concurrent Ray workers."""
    import ray

    from coordinator.server import CoordinatorConfig, start_coordinator
    from coordinator.job_states import TERMINAL_PB
    from protos.nt.v1 import control_pb2, control_pb2_grpc
    from site_agent.client import RegistryClient
    from site_agent.service import start_site_agent
    from site_agent.train import TrainOptions, train_site

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"TRANSPLANT_THREADS": "1"}})
    handle = start_coordinator(CoordinatorConfig(store_url=f"local://{workdir / f'store{workers}'}",
                                                 state_dir=workdir / f"state{workers}", port=0,
                                                 max_concurrent_jobs=workers))
    sites = []
    try:
        for site_id, digit in (("generic", "3"), ("new", "5")):
            workspace = workdir / f"{site_id}{workers}"
            if not workspace.exists():
                train_site(TrainOptions(site_id=site_id, data=f"digits:{digit}", size=16, width=8, depth=3,
                                        epochs=5), workspace, progress=False)
            with RegistryClient(handle.address) as registry:
                registry.push_workspace(workspace, progress=False)
            sites.append(start_site_agent(workspace, handle.address, heartbeat_s=0.5))
        time.sleep(1.5)
        control = control_pb2_grpc.ControlStub(grpc.insecure_channel(handle.address))
        spec = control_pb2.TransplantJobSpec(category="5", task="classification", method="back_distill", steps=300,
                                             adapter=control_pb2.AdapterConfig(layers=2, kernel_size=1),
                                             teacher_site_id="new", generic_site_id="generic")
        start = time.perf_counter()
        ids = [control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id for _ in range(jobs)]
        while any(control.GetJob(control_pb2.GetJobRequest(job_id=i)).state not in TERMINAL_PB for i in ids):
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        # identical jobs: the first enters the net, every repeat is REJECTED as not better; both ran in full
        done = (control_pb2.SUCCEEDED, control_pb2.REJECTED)
        failed = [i for i in ids if control.GetJob(control_pb2.GetJobRequest(job_id=i)).state not in done]
        if failed:
            raise RuntimeError(f"{len(failed)} benchmark job(s) failed")
        return jobs / seconds * 3600
    finally:
        for site in sites:
            site.stop()
        handle.stop()


def system_figures(quick: bool = False) -> dict[str, float]:
    figures = upload_figures(50 if quick else 500)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = 2 if quick else 8
        jobs_per_hour(1, 1, Path(tmp))  # warm-up: Ray workers start and import torch once
        figures["jobs_per_hour_1_worker"] = jobs_per_hour(1, jobs, Path(tmp))
        figures["jobs_per_hour_2_workers"] = jobs_per_hour(2, jobs, Path(tmp))
    figures["jobs_benchmark_jobs"] = jobs
    return figures


if __name__ == "__main__":
    import json

    os.environ.setdefault("TRANSPLANT_THREADS", "1")
    print(json.dumps(system_figures(quick="--quick" in sys.argv), indent=2))
