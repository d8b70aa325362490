"""Hot swaps under load: while the net grows, every request in flight is answered, by one version.

Also the replica path on one machine: two serving processes (`python -m coordinator.serving serve`)
on one store, both picking up each new version.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from common.security import ClientSecurity
from coordinator.serving.server import ServingConfig, start_serving
from coordinator.store import LocalStore
from coordinator.manifests import commit_net, load_latest_net, load_net
from protos.nt.v1 import predict_pb2, predict_pb2_grpc
from tests.coordinator.serving.conftest import png
from tests.helpers.nets import base_net, grow
from transplant.architectures import CLASSIFICATION

ROOT = Path(__file__).resolve().parents[3]


class Load:
    """Client threads calling Predict on (dog, classification) until stopped; every outcome recorded."""

    def __init__(self, addresses: list[str], threads: int = 4) -> None:
        self.stubs = [predict_pb2_grpc.PredictStub(ClientSecurity().channel(a)) for a in addresses]
        self.errors: list[str] = []
        self.versions: list[list[int]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        self.image = png((24, 24, 3), 7)

    def _run(self, i: int) -> None:
        stub = self.stubs[i % len(self.stubs)]
        request = predict_pb2.PredictRequest(category="dog", task=CLASSIFICATION, images=[self.image] * 2)
        while not self._stop.is_set():
            try:
                reply = stub.Predict(request, timeout=30)
                self.versions[i].append(reply.version)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def _served_version(stub: predict_pb2_grpc.PredictStub) -> int:
    try:
        return stub.ListRoutes(predict_pb2.ListRoutesRequest(), timeout=10).version
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:  # no version loaded yet
            raise
        return 0


def _wait_for(stub: predict_pb2_grpc.PredictStub, version: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while _served_version(stub) < version:
        assert time.monotonic() < deadline, f"version {version} was not swapped in within {timeout_s} s"
        time.sleep(0.02)


def test_hot_swap_under_load_fails_no_request(tmp_path):
    store = LocalStore(tmp_path / "store")
    base_net(store)
    handle = start_serving(ServingConfig(f"local://{tmp_path / 'store'}", port=0, poll_s=0.02, max_wait_s=0.002))
    try:
        stub = predict_pb2_grpc.PredictStub(ClientSecurity().channel(handle.address))
        with Load([handle.address]) as load:
            time.sleep(0.3)
            for version, category in ((2, "cat"), (3, "cow")):
                grow(store, "site-dog", category, seed=version)
                _wait_for(stub, version)
                time.sleep(0.3)
        assert load.errors == []
        for seen in load.versions:
            assert seen == sorted(seen), "a client saw an older version after a newer one"
        assert {1, 3} <= {v for seen in load.versions for v in seen}
        reply = stub.Predict(predict_pb2.PredictRequest(category="cow", task=CLASSIFICATION, images=[load.image]),
                             timeout=30)
        assert reply.version == 3 and reply.predictions[0].label in ("cow", "not cow")
        assert handle.metrics.swaps._value.get() == 3
    finally:
        handle.stop(0)


def _replica(store_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.serving", "serve", "--store", store_url, "--port", "0",
                             "--poll", "0.05", "--metrics-port", "-1"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = re.search(r"Predict listening on ([\d.]+:\d+)", log.read_text())
        if match:
            return proc, match.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"replica did not start: {log.read_text()}")


@pytest.mark.slow
def test_two_replica_processes_on_one_store_both_swap_under_load(tmp_path):
    store = LocalStore(tmp_path / "store")
    base_net(store)
    url = f"local://{tmp_path / 'store'}"
    started = [_replica(url, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        addresses = [address for _, address in started]
        stubs = [predict_pb2_grpc.PredictStub(ClientSecurity().channel(a)) for a in addresses]
        with Load(addresses) as load:
            time.sleep(0.5)
            grow(store, "site-dog", "cat", seed=2)
            for stub in stubs:
                _wait_for(stub, 2)
            time.sleep(0.3)
        assert load.errors == []
        assert all(seen and seen[-1] == 2 for seen in load.versions)
    finally:
        for proc, _ in started:
            proc.terminate()
        for proc, _ in started:
            assert proc.wait(timeout=30) == 0


def test_no_net_yet_is_unavailable_then_served_and_a_broken_version_keeps_the_old_one(tmp_path):
    store = LocalStore(tmp_path / "store")
    handle = start_serving(ServingConfig(f"local://{tmp_path / 'store'}", port=0, poll_s=0.02))
    try:
        stub = predict_pb2_grpc.PredictStub(ClientSecurity().channel(handle.address))
        request = predict_pb2.PredictRequest(category="dog", task=CLASSIFICATION, images=[png((8, 8, 3), 0)])
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "no transplant net" in info.value.details()
        base_net(store)
        _wait_for(stub, 1)
        broken = load_latest_net(store, "site-dog").next_version()
        broken.category_modules["ghost"] = "site-ghost-category-ghost-0000000000000000"  # not in the store
        commit_net(store, broken)
        deadline = time.monotonic() + 10
        while handle.metrics.load_errors._value.get() < 1:
            assert time.monotonic() < deadline, "the broken version was not noticed"
            time.sleep(0.02)
        assert stub.Predict(request, timeout=10).version == 1  # still the last good version
        commit_net(store, replace(load_net(store, "site-dog", 1), version=3))  # a rollback to v1 loads: served
        _wait_for(stub, 3)
    finally:
        handle.stop(0)
