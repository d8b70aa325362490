"""Inference figures: the Predict service at 1, 8 and 32 concurrent clients against the same images
through an in-process `TransplantPath` forward, in one run on one machine.

    python -m benchmarks.perf_inference [--seconds 5] [--out benchmarks/results/perf.json]

The net has the demo's shapes architecture (VGG-style, width 16, 3 stages, 32x32 RGB, both heads;
random weights: speed does not depend on them), written into a local store as a promoted version.
The service is a separate process (`python -m coordinator.serving serve`, default batching: 32 images,
5 ms); clients are threads of this process, each sending one 64x64 PNG per request back to back.
In-process: the same PNG bytes decoded and preprocessed by the same function the service uses, then
forwarded in batches of 32 by the route's TransplantPath, measured before and after the service (the
mean is the reference: the load of a shared machine drifts). CPU seconds per request (client threads,
server process) and per in-process image are load-independent and say where the time goes. Keys starting `inference_` are merged into
perf.json; every other key there is kept.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import torch
from PIL import Image

from common.security import ClientSecurity
from coordinator.serving.images import ImageLimits, decode
from coordinator.serving.loader import ModuleCache, build_served
from coordinator.store import LocalStore
from coordinator.manifests import load_latest_net
from protos.nt.v1 import predict_pb2, predict_pb2_grpc
from tests.helpers.nets import base_net
from transplant.architectures import CLASSIFICATION, vgg_small
from transplant.predict import preprocessing
from transplant.runtime import configure_threads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEMO_SHAPES = vgg_small(width=16, depth=3, image_size=32)
CLIENTS = (1, 8, 32)
INPROCESS_BATCH = 32  # the service's default --max-batch


def images(count: int, side: int = 64) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def in_process(store: LocalStore, data: list[bytes], seconds: float, batch: int = INPROCESS_BATCH) -> dict[str, float]:
    """Images per second decoding + forwarding in batches, and the forward alone."""
    net = build_served(load_latest_net(store, "site-dog"), ModuleCache(store)).net
    path, prep, limits = net.path("dog", CLASSIFICATION).eval(), preprocessing(net, "dog"), ImageLimits()
    done, forward_s, started, cpu = 0, 0.0, time.perf_counter(), _cpu_s()
    with torch.no_grad():
        while time.perf_counter() - started < seconds:
            chunk = [data[(done + i) % len(data)] for i in range(batch)]
            x = torch.stack([decode(b, prep, i, limits) for i, b in enumerate(chunk)])
            t0 = time.perf_counter()
            path(x)
            forward_s += time.perf_counter() - t0
            done += batch
    total, cpu = time.perf_counter() - started, _cpu_s() - cpu
    return {"inference_inprocess_images_per_s": done / total, "inference_inprocess_forward_only_images_per_s":
            done / forward_s, "inference_inprocess_cpu_ms_per_image":
            1000 * cpu / done}


def start_server(store_dir: Path) -> tuple[subprocess.Popen, str, str]:
    log = store_dir.parent / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.serving", "serve", "--store", f"local://{store_dir}",
                             "--port", "0", "--metrics-port", "0"], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TRANSPLANT_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        if (match := re.search(r"Predict listening on ([\d.]+:\d+)", text)) and (
                metrics := re.search(r"metrics on (http://\S+)", text)):
            return proc, match.group(1), metrics.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the serving process did not start: {log.read_text()}")


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of process `pid`."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batches(metrics_url: str) -> tuple[float, float]:
    """(images, forward passes) the server has run so far, from its /metrics."""
    text = urlopen(metrics_url, timeout=10).read().decode()
    total = {kind: sum(float(v) for v in re.findall(rf"^transplant_predict_batch_images_{kind}\{{.*\}} (\S+)$",
                                                      text, re.M)) for kind in ("sum", "count")}
    return total["sum"], total["count"]


def through_service(address: str, data: list[bytes], clients: int, seconds: float,
                    server_pid: int | None = None, metrics_url: str | None = None) -> dict[str, float]:
    """Requests (one image each) per second, latency percentiles and CPU per request (client, server)
    with `clients` threads."""
    channels = [ClientSecurity().channel(address) for _ in range(min(clients, 8))]
    stubs = [predict_pb2_grpc.PredictStub(c) for c in channels]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        stub = stubs[i % len(stubs)]
        n = i
        while not stop.is_set():
            request = predict_pb2.PredictRequest(category="dog", task=CLASSIFICATION, images=[data[n % len(data)]])
            t0 = time.perf_counter()
            try:
                stub.Predict(request, timeout=60)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                errors.append(str(exc))
            latencies[i].append(time.perf_counter() - t0)
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu_client, cpu_server = _cpu_s(), _cpu_s(server_pid) if server_pid else 0.0
    batches = _batches(metrics_url) if metrics_url else (0.0, 0.0)
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    cpu_client, cpu_server = _cpu_s() - cpu_client, (_cpu_s(server_pid) - cpu_server) if server_pid else 0.0
    for c in channels:
        c.close()
    flat = np.array([x for lat in latencies for x in lat])
    key = f"inference_service_{clients}_clients"
    return {f"{key}_rps": len(flat) / total, f"{key}_p50_ms": float(np.percentile(flat, 50) * 1000),
            f"{key}_p99_ms": float(np.percentile(flat, 99) * 1000), f"{key}_errors": len(errors),
            f"{key}_client_cpu_ms_per_request": 1000 * cpu_client / len(flat),
            f"{key}_server_cpu_ms_per_request": 1000 * cpu_server / len(flat), **_mean_batch(key, batches, metrics_url)}


def _mean_batch(key: str, before: tuple[float, float], metrics_url: str | None) -> dict[str, float]:
    if not metrics_url:
        return {}
    images, passes = (now - then for now, then in zip(_batches(metrics_url), before))
    return {f"{key}_mean_batch_images": images / passes if passes else 0.0}


def measure(seconds: float) -> dict[str, object]:
    configure_threads()
    data = images(256)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        store = LocalStore(store_dir)
        base_net(store, config=DEMO_SHAPES)
        before = in_process(store, data, seconds / 2)
        figures: dict[str, object] = {}
        proc, address, metrics_url = start_server(store_dir)
        try:
            through_service(address, data, 8, 1.0)  # warm-up: connections, first batches
            for clients in CLIENTS:
                figures.update(through_service(address, data, clients, seconds, proc.pid, metrics_url))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        after = in_process(store, data, seconds / 2)  # before and after: a shared machine's load drifts
        figures.update({k: (before[k] + after[k]) / 2 for k in before})
        figures["inference_inprocess_batch"] = INPROCESS_BATCH
        figures["inference_inprocess_images_per_s_before_after"] = [before["inference_inprocess_images_per_s"],
                                                                     after["inference_inprocess_images_per_s"]]
    figures["inference_service_over_inprocess_32_clients"] = (
        figures["inference_service_32_clients_rps"] / figures["inference_inprocess_images_per_s"])  # type: ignore[operator]
    figures["inference_inprocess_over_service_cpu_per_image_32_clients"] = (  # 1.0: serving costs no extra CPU
        figures["inference_inprocess_cpu_ms_per_image"] / figures["inference_service_32_clients_server_cpu_ms_per_request"])  # type: ignore[operator]
    figures["inference_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else (
        f"cpu, {os.cpu_count()} cores, 1 torch thread per process")
    figures["inference_image"] = "64x64 RGB PNG, one per request; net: demo shapes (32x32 input, width 16, 3 stages)"
    figures["inference_seconds_per_level"] = seconds
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / "perf.json", help="perf.json to merge the figures into")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per concurrency level")
    args = parser.parse_args(argv)
    figures = measure(args.seconds)
    doc = json.loads(args.out.read_text()) if args.out.is_file() else {}
    doc = {k: v for k, v in doc.items() if not k.startswith("inference_")}
    doc.update(figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    for key in sorted(figures):
        print(f"{key:50s} {figures[key]}")
    print(f"merged into {args.out}")


if __name__ == "__main__":
    main()
