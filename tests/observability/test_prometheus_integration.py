"""A real Prometheus scrapes a small end-to-end run (coordinator on Ray + two site agents on loopback);
its HTTP query API must return the adapter-quality and job series with the values the run produced."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from coordinator.server import CoordinatorConfig, start_coordinator
from coordinator.job_states import TERMINAL_PB
from protos.nt.v1 import control_pb2, control_pb2_grpc
from site_agent.client import RegistryClient
from site_agent.service import start_site_agent
from site_agent.train import TrainOptions, train_site

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        doc = json.load(reply)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def wait_for_series(base: str, expr: str, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = query(base, expr)
        except OSError:
            result = []
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"Prometheus has no series for {expr!r} after {timeout_s} s")


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on loopback; returns (start(targets) -> base URL)."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: `make test` installs it (tests/setup_services.sh)")
    procs = []

    def start(coordinator_target: str, site_targets: list[str]) -> str:
        shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [coordinator_target] if job["job_name"] == "coordinator"
                                      else site_targets}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{port}"
        wait_for_series(base, 'up{job="coordinator"} == 1')
        return base

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def test_prometheus_sees_adapter_quality_and_jobs(ray_session, tmp_path, prometheus):
    handle = start_coordinator(CoordinatorConfig(store_url=f"local://{tmp_path / 'store'}",
                                                 state_dir=tmp_path / "state", port=0, metrics_port=0))
    sites = []
    try:
        for site_id, digit in (("site-generic", "3"), ("site-new", "5")):
            workspace = tmp_path / site_id
            train_site(TrainOptions(site_id=site_id, data=f"digits:{digit}", size=16, width=8, depth=3, epochs=6),
                       workspace, progress=False)
            with RegistryClient(handle.address) as registry:
                registry.push_workspace(workspace, progress=False)
            sites.append(start_site_agent(workspace, handle.address, heartbeat_s=0.5, metrics_port=0))
        base = prometheus(f"127.0.0.1:{handle.metrics_port}", [f"127.0.0.1:{s.metrics_port}" for s in sites])

        control = control_pb2_grpc.ControlStub(grpc.insecure_channel(handle.address))
        spec = control_pb2.TransplantJobSpec(
            category="5", task="classification", method="back_distill", samples=0, seed=0, steps=40,
            adapter=control_pb2.AdapterConfig(layers=2, kernel_size=1), teacher_site_id="site-new",
            generic_site_id="site-generic", max_gap=100.0)  # the path, not the quality: the gate lets it in
        time.sleep(1.5)  # heartbeats: the coordinator learns where the sites listen
        job_id = control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id
        deadline = time.monotonic() + 240
        while (job := control.GetJob(control_pb2.GetJobRequest(job_id=job_id))).state not in TERMINAL_PB:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.5)
        assert job.state == control_pb2.SUCCEEDED, job.error or job.reason
        metrics = {m.name: m.value for m in job.metrics}

        quality = wait_for_series(base, 'transplant_adapter_quality{category="5",task="classification",'
                                        'method="back_distill",metric="error_rate"}')
        assert float(quality[0]["value"][1]) == pytest.approx(metrics["error_rate"])
        teacher = wait_for_series(base, 'transplant_teacher_quality{category="5",metric="error_rate"}')
        assert float(teacher[0]["value"][1]) == pytest.approx(metrics["teacher_error_rate"])
        gap = wait_for_series(base, 'transplant_route_gap_points{category="5",task="classification",'
                                    'metric="error_rate"}')  # the dashboard colours routes by it
        assert float(gap[0]["value"][1]) == pytest.approx(metrics["error_rate"] - metrics["teacher_error_rate"])
        assert wait_for_series(base, 'transplant_max_gap_points{task="classification"}')
        succeeded = wait_for_series(base, 'transplant_jobs{state="SUCCEEDED"} == 1')
        assert len(succeeded) == 1
        finished = wait_for_series(base, 'transplant_jobs_finished_total{state="SUCCEEDED"}')
        assert float(finished[0]["value"][1]) == 1
        durations = wait_for_series(base, "transplant_job_duration_seconds_count")
        assert float(durations[0]["value"][1]) == 1
        uploads = wait_for_series(base, 'transplant_bytes_received_total{site="site-new"}')
        assert float(uploads[0]["value"][1]) > 0
        assert wait_for_series(base, 'transplant_grpc_requests_total{method="SubmitJob",code="OK"}')
        evaluations = wait_for_series(base, 'transplant_site_evaluations_total{site="site-new",result="OK"}')
        assert float(evaluations[0]["value"][1]) == 1
        assert len(wait_for_series(base, 'up{job="sites"} == 1')) == 2
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as reply:
            rules = json.load(reply)["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} >= {"AdapterWorseThanTeacher", "TransplantJobsFailing", "CoordinatorDown"}
    finally:
        for site in sites:
            site.stop()
        handle.stop()
