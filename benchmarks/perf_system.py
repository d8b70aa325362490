"""System figures for `make bench-perf`: module transfer speed and memory, and job throughput on Ray.

- upload and download: a large task module (500 MB by default) pushed through ModuleRegistry.Upload
  from a file, in 1 MiB chunks, to a coordinator in another process, then fetched back with the common
  client's checked download; the client's and the coordinator's peak RSS are sampled from /proc. Run
  with the store on a RAM disk (the registry's own cost) and on the disk. The ceilings, measured in the
  same run: the same bytes through a bare gRPC stream each way (no protobuf messages, no checks, no
  storage), hashlib's sha256 over them, and a durable write of them to the disk.
- jobs (benchmarks/perf_jobs.py): jobs per hour with 1 and 2 Ray workers and where a job's time goes;
  an `auto` job against its slowest single candidate.
"""
from __future__ import annotations

import hashlib
import os
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from common.allocator import keep_freed_buffers

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


# Every client process, the ceilings' included, runs under the allocator settings the site agent uses.
CLIENT_PRELUDE = "from common.allocator import keep_freed_buffers\nkeep_freed_buffers()\n"

UPLOAD_CLIENT = CLIENT_PRELUDE + """
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
start, cpu = time.perf_counter(), time.process_time()
reply = registry_pb2_grpc.ModuleRegistryStub(channel).Upload(requests(), timeout=1800)
print(json.dumps({"seconds": time.perf_counter() - start, "size": size, "module_id": reply.module_id,
                  "client_cpu_s": time.process_time() - cpu}), flush=True)
"""

RAW_CLIENT = CLIENT_PRELUDE + """
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


RAW_DOWNLOAD_CLIENT = CLIENT_PRELUDE + """
import sys, time, json
import grpc
address, chunk = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
pull = channel.unary_stream("/bench.Sink/Pull")
start = time.perf_counter()
size = sum(len(piece) for piece in pull(str(chunk).encode(), timeout=1800))
print(json.dumps({"seconds": time.perf_counter() - start, "size": size}), flush=True)
"""

DOWNLOAD_CLIENT = CLIENT_PRELUDE + """
import sys, time, json
import grpc
from common.registry_client import download
from protos.nt.v1 import registry_pb2_grpc
address, module_id, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
sys.stdin.readline()  # wait until the sampler runs
start, cpu = time.perf_counter(), time.process_time()
info, data = download(registry_pb2_grpc.ModuleRegistryStub(channel), module_id, chunk, timeout=1800)
print(json.dumps({"seconds": time.perf_counter() - start, "size": len(data), "cpu": time.process_time() - cpu}),
      flush=True)
"""


def _run_json(code: str, *args: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_grpc_figures(weights: Path) -> dict[str, float]:
    """The same bytes through a bare gRPC stream each way (a server that only counts, or only reads the
    file): the loopback ceiling, with no protobuf messages, no checks, no storage."""
    def sink(request_iterator, context):
        return str(sum(len(piece) for piece in request_iterator)).encode()

    def source(request, context):
        with open(weights, "rb") as f:
            yield from iter(lambda: f.read(int(request)), b"")

    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_receive_message_length", 64 << 20),
                                                                  ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Sink", {
        "Push": grpc.stream_unary_rpc_method_handler(sink), "Pull": grpc.unary_stream_rpc_method_handler(source)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        up = _run_json(RAW_CLIENT, f"127.0.0.1:{port}", str(weights), str(CHUNK))
        down = _run_json(RAW_DOWNLOAD_CLIENT, f"127.0.0.1:{port}", str(CHUNK))
    finally:
        server.stop(0)
    return {"raw_grpc_mb_s": up["size"] / up["seconds"] / 1e6,
            "raw_grpc_download_mb_s": down["size"] / down["seconds"] / 1e6}


def sha256_mb_s(weights: Path, megabytes: int = 256) -> float:
    """hashlib's sha256 over the module's bytes, in the chunks the registry sees (best of 3)."""
    with open(weights, "rb") as f:
        pieces = [p for p in iter(lambda: f.read(CHUNK), b"")][:megabytes]
    best = float("inf")
    for _ in range(3):
        start, digest = time.perf_counter(), hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        best = min(best, time.perf_counter() - start)
    return sum(map(len, pieces)) / best / 1e6


def durable_write_mb_s(weights: Path, directory: Path) -> float:
    """The store's share: the same bytes through the LocalStore's writer (O_DIRECT where the filesystem has it,
    else buffered with fdatasync as it goes; fsync, rename)."""
    from coordinator.store import BlobInfo, LocalStore

    store, digest = LocalStore(directory), hashlib.sha256()
    with open(weights, "rb") as f:
        for piece in iter(lambda: f.read(CHUNK), b""):
            digest.update(piece)
    size = weights.stat().st_size
    with open(weights, "rb") as f, store.open_writer(digest.hexdigest(), size) as writer:
        start = time.perf_counter()
        for piece in iter(lambda: f.read(CHUNK), b""):
            writer.write(piece)
        writer.commit(BlobInfo(digest.hexdigest(), size))
        seconds = time.perf_counter() - start
    return size / seconds / 1e6


def fast_dir() -> Path | None:
    """A RAM-backed folder if there is one: the registry's own cost, without the disk's."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _serve(tmp_path: Path, store_root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--store", f"local://{store_root}",
         "--state-dir", tempfile.mkdtemp(dir=tmp_path), "--port", str(port), "--metrics-port", "-1",
         "--max-upload-gib", "4", "--site-quota-gib", "8"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert coordinator.stdout is not None
    for line in coordinator.stdout:  # wait until it serves
        if "coordinator listening" in line:
            break
    return coordinator, port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _sampled(code: str, pid_of_server: int, *args: str) -> tuple[dict, float, float]:
    """Runs a client script once the RSS sampler runs; (its JSON with the server's CPU seconds during the
    transfer as "server_cpu_s", client and server peak RSS increase)."""
    import json

    client = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # the client has imported grpc (and hashed the file)
    with RssSampler([client.pid, pid_of_server]) as sampler:
        assert client.stdin is not None
        before = cpu_s(pid_of_server)
        client.stdin.write("go\n")
        client.stdin.flush()
        out, _ = client.communicate(timeout=1800)
        used = cpu_s(pid_of_server) - before
    result = json.loads(out.strip().splitlines()[-1])
    result["server_cpu_s"] = used
    return result, sampler.extra(client.pid), sampler.extra(pid_of_server)


def transfer_run(tmp_path: Path, store_root: Path, weights: Path) -> dict[str, float]:
    """One upload then one download of the module through a coordinator in its own process."""
    coordinator, port = _serve(tmp_path, store_root)
    address = f"127.0.0.1:{port}"
    try:
        up, client_rss, server_rss = _sampled(UPLOAD_CLIENT, coordinator.pid, address, str(tmp_path / "big.json"),
                                              str(weights), str(CHUNK))
        stored = _verify_stored(store_root, weights)
        down, _, down_server_rss = _sampled(DOWNLOAD_CLIENT, coordinator.pid, address, up["module_id"], str(CHUNK))
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=60)
    return {"upload_mb_s": up["size"] / up["seconds"] / 1e6, "size": up["size"], "stored": stored,
            "upload_server_cpu_s_per_gb": up["server_cpu_s"] / up["size"] * 1e9,
            "upload_client_cpu_s_per_gb": up["client_cpu_s"] / up["size"] * 1e9,
            "client_rss": client_rss, "server_rss": server_rss,
            "download_mb_s": down["size"] / down["seconds"] / 1e6, "download_server_rss": down_server_rss}


def upload_figures(megabytes: int, rounds: int = 3) -> dict[str, object]:
    """Upload and download through the registry against their ceilings, the store on a RAM disk (the
    registry's own cost) and on this machine's disk (what a local store adds). Each round measures the
    ceilings right beside the transfers, so a busy machine slows both; the figures are the rounds' medians."""
    keep_freed_buffers()  # the raw-gRPC ceiling's server runs in this process: the same allocator as the coordinator
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        _, weights = write_big_module(tmp_path, megabytes)
        ram = fast_dir()
        runs = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory(dir=ram) as store_dir:
                fast = transfer_run(tmp_path, Path(store_dir) / "store", weights)
            fast.update(raw_grpc_figures(weights), sha256_mb_s=sha256_mb_s(weights))
            fast["upload_over_limit"] = fast["upload_mb_s"] / min(fast["raw_grpc_mb_s"], fast["sha256_mb_s"])
            fast["download_over_limit"] = fast["download_mb_s"] / min(fast["raw_grpc_download_mb_s"],
                                                                      fast["sha256_mb_s"])
            runs.append(fast)
        disk = transfer_run(tmp_path, tmp_path / "store", weights)
        disk_write = durable_write_mb_s(weights, tmp_path / "write")
        with tempfile.TemporaryDirectory(dir=ram) as ram_dir:  # fresh pages: what the RAM-disk store pays
            ram_write = durable_write_mb_s(weights, Path(ram_dir) / "write")

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    return {
        "upload_module_mb": runs[0]["size"] / 1e6, "upload_rounds": rounds,
        "upload_store": "RAM disk (/dev/shm)" if ram else "disk (no RAM disk here)",
        **{key: median(key) for key in ("raw_grpc_mb_s", "raw_grpc_download_mb_s", "sha256_mb_s", "upload_mb_s",
                                        "upload_over_limit", "download_mb_s", "download_over_limit")},
        "upload_coordinator_cpu_s_per_gb": median("upload_server_cpu_s_per_gb"),
        "upload_client_cpu_s_per_gb": median("upload_client_cpu_s_per_gb"),
        "sha256_cpu_s_per_gb": 1000 / median("sha256_mb_s"),
        "disk_write_mb_s": disk_write,
        "ram_disk_write_mb_s": ram_write,
        "upload_disk_store_mb_s": disk["upload_mb_s"],
        "upload_disk_store_over_limit": disk["upload_mb_s"] / min(median("raw_grpc_mb_s"), median("sha256_mb_s"),
                                                                  disk_write),
        "download_disk_store_mb_s": disk["download_mb_s"],
        "upload_client_peak_rss_extra_mb": max(run["client_rss"] for run in runs),
        "upload_coordinator_peak_rss_extra_mb": max(run["server_rss"] for run in runs),
        "upload_peak_rss_extra_mb": max(max(run["client_rss"], run["server_rss"]) for run in runs),
        "download_coordinator_peak_rss_extra_mb": max(run["download_server_rss"] for run in runs),
        "upload_chunk_mb": CHUNK / (1 << 20),
        "upload_stored_intact": all(run["stored"] for run in runs) and bool(disk["stored"]),
    }


def _verify_stored(store_root: Path, weights: Path) -> bool:
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for piece in iter(lambda: f.read(CHUNK), b""):
            digest.update(piece)
    from coordinator.store import open_store

    store = open_store(f"local://{store_root}")  # the LocalStore the coordinator wrote
    check = hashlib.sha256()
    for piece in store.open_blob(digest.hexdigest()):
        check.update(piece)
    return check.hexdigest() == digest.hexdigest()


def system_figures(quick: bool = False) -> dict[str, object]:
    from benchmarks.perf_jobs import auto_figures, bare_scaling, jobs_per_hour

    figures: dict[str, object] = dict(upload_figures(50 if quick else 500))
    with tempfile.TemporaryDirectory() as tmp:
        figures.update(jobs_per_hour(Path(tmp), 2 if quick else 12))
        figures.update(bare_scaling(1 if quick else 6))
        figures["jobs_2_over_1_worker_of_bare"] = figures["jobs_2_over_1_worker"] / figures["bare_2_over_1_process"]
        figures.update(auto_figures(Path(tmp)))
    figures["load_average_1min_at_end"] = os.getloadavg()[0]  # other work on the machine while measuring
    return figures


if __name__ == "__main__":
    import json

    os.environ.setdefault("TRANSPLANT_THREADS", "1")
    print(json.dumps(system_figures(quick="--quick" in sys.argv), indent=2))
