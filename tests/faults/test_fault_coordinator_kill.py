"""Killing the coordinator (SIGKILL of `python -m coordinator serve`) in the middle of several jobs, then
starting it again on the same state dir and store: every job ends exactly once, no result is lost or
committed twice, and the transplant net's versions stay contiguous with LATEST consistent."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.guard import ADMIN, SITE
from coordinator.ledger import EVALUATING, SUCCEEDED, Ledger
from coordinator.netbook import NetBook
from coordinator.server import reconcile_committed_jobs
from coordinator.store import LocalStore
from coordinator.tokens import new_token
from coordinator.store.manifests import (AdapterEntry, NetManifest, commit_net, list_net_versions,
                                         load_latest_net, load_module_record, load_net, net_latest_key,
                                         net_version_key)
from protos.nt.v1 import control_pb2, heartbeat_pb2
from tests.faults.fault_helpers import InstantSite, serve_site, wait_terminal
from tests.helpers.cluster import TASK, issue, job_spec, push_site, stubs

pytestmark = [pytest.mark.faults, pytest.mark.integration]
CATEGORIES = ("1", "2", "3", "4", "5")


def test_a_job_committed_just_before_a_crash_is_not_run_again(tmp_path) -> None:
    """The window between the net commit and the ledger's SUCCEEDED: the manifest is the commit point."""
    store, ledger = LocalStore(tmp_path / "store"), Ledger(tmp_path / "ledger.db")
    committed, cut_off = ledger.create_job({"category": "3"}), ledger.create_job({"category": "4"})
    for job in (committed, cut_off):
        assert ledger.transition(job.id, "RUNNING") and ledger.transition(job.id, EVALUATING)
    entry = AdapterEntry("3", TASK, "coordinator-adapter-x", "0" * 64, metrics={"error_rate": 7.0},
                         teacher_metrics={"error_rate": 6.0}, job_id=committed.id)
    commit_net(store, NetManifest("default", 1, adapters=[entry]))
    commit_net(store, NetManifest("default", 2, adapters=[entry]))  # a later job left it in place
    assert reconcile_committed_jobs(ledger, NetBook(store)) == [committed.id]
    row = ledger.get_job(committed.id)
    assert (row.state, row.net_version, row.metrics) == (SUCCEEDED, 1, {"error_rate": 7.0, "teacher_error_rate": 6.0})
    assert ledger.get_job(cut_off.id).state == EVALUATING  # not committed: recovery re-runs it
    assert ledger.recover(3) == [cut_off.id]
    ledger.close()


class Coordinator:
    """`python -m coordinator serve` in a subprocess, joined to the test session's Ray cluster."""

    def __init__(self, root: Path, ray_address: str, auth_file: Path, token_file: Path, name: str) -> None:
        self.log = root / f"{name}.log"
        command = [sys.executable, "-m", "coordinator", "serve", "--store", f"local://{root / 'store'}",
                   "--state-dir", str(root / "state"), "--port", "0", "--ray-address", ray_address,
                   "--metrics-port", "-1", "--max-concurrent-jobs", "2", "--eval-timeout", "30",
                   "--max-attempts", "3", "--auth-file", str(auth_file), "--coordinator-token-file", str(token_file)]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "TRANSPLANT_THREADS": "1"})
        deadline = time.monotonic() + 120
        while not (found := re.search(rb"coordinator listening on 127\.0\.0\.1:(\d+)", self.log.read_bytes())):
            assert self.process.poll() is None, f"coordinator exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"coordinator did not start:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        self.address = f"127.0.0.1:{int(found.group(1))}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def test_sigkill_mid_jobs_then_restart(ray_session, tmp_path) -> None:
    ray_address = ray_session.get_runtime_context().gcs_address
    auth_file, token_file = tmp_path / "auth.json", tmp_path / "coordinator.token"
    tokens = {site: issue(auth_file, SITE, site) for site in ("site-t", "site-g", "site-x")}
    admin_token = issue(auth_file, ADMIN, "ops")
    coordinator_token = new_token()
    token_file.write_text(coordinator_token)
    site = InstantSite()
    site_server, endpoint = serve_site(site, token=coordinator_token)  # refuses Evaluate without the token
    first = Coordinator(tmp_path, ray_address, auth_file, token_file, "first")
    second = None
    try:
        sites = {name: stubs(first.address, token) for name, token in tokens.items()}
        for seed, category in enumerate(CATEGORIES):
            push_site(sites["site-t"].registry, "site-t", category, seed=seed + 10)
        push_site(sites["site-g"].registry, "site-g", "0", seed=1)
        push_site(sites["site-x"].registry, "site-x", "9", seed=2)  # never announces an endpoint
        assert sites["site-t"].heartbeat.Ping(heartbeat_pb2.PingRequest(site_id="site-t", endpoint=endpoint)).ok
        admin = stubs(first.address, admin_token)
        submit = lambda spec: admin.control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec)).job.job_id  # noqa: E731
        ids = [submit(job_spec("site-t", "site-g", category, steps=1000, seed=i))
               for i, category in enumerate(CATEGORIES)]
        unreachable = submit(job_spec("site-x", "site-g", "9", steps=10))

        # kill once a job has succeeded and another is mid-run
        deadline = time.monotonic() + 150
        while True:
            states = {j: admin.control.GetJob(control_pb2.GetJobRequest(job_id=j)).state for j in ids}
            running = [j for j, s in states.items() if s in (control_pb2.RUNNING, control_pb2.EVALUATING)]
            if control_pb2.SUCCEEDED in states.values() and running:
                break
            assert time.monotonic() < deadline, f"never got mid-run: {states}\n{first.log.read_text()[-3000:]}"
            time.sleep(0.1)
        first.kill()
        ledger = Ledger(tmp_path / "state" / "ledger.sqlite3")  # the truth at the moment of the kill
        before = {j: ledger.get_job(j).state for j in ids}
        ledger.close()
        cut_off = {j for j, state in before.items() if state in ("RUNNING", "EVALUATING")}
        assert cut_off and "SUCCEEDED" in before.values(), before
        for client in (*sites.values(), admin):
            client.close()

        second = Coordinator(tmp_path, ray_address, auth_file, token_file, "second")
        admin = stubs(second.address, admin_token)
        jobs = wait_terminal(admin.control, [*ids, unreachable], timeout=180)
        after = {j: (control_pb2.JobState.Name(job.state), job.attempts, job.net_version) for j, job in jobs.items()}
        print(f"\nat the kill: {before}\nafter the restart: {after}")

        assert jobs[unreachable].state == control_pb2.FAILED
        assert "site-x has never announced its endpoint" in jobs[unreachable].error
        for job_id in ids:
            assert jobs[job_id].state == control_pb2.SUCCEEDED, (job_id, jobs[job_id].error)
        for job_id in cut_off:
            assert jobs[job_id].attempts >= 2, f"{job_id} was cut off but not re-run"

        # the net: exactly one commit per succeeded job, versions 1..N, LATEST == vN
        store = LocalStore(tmp_path / "store")
        versions = list_net_versions(store, "site-g")  # the generic site's net
        assert versions == list(range(1, len(ids) + 1))
        assert sorted(jobs[j].net_version for j in ids) == versions  # each job committed exactly once
        latest = load_latest_net(store, "site-g")
        assert latest.version == len(ids)
        assert store.get_json(net_latest_key("site-g")) == store.get_json(net_version_key("site-g", latest.version))
        assert not store.get_json(net_version_key("site-g", latest.version + 1))
        pairs = [(a.category, a.task) for a in latest.adapters]
        assert sorted(pairs) == sorted((c, TASK) for c in CATEGORIES)  # no duplicate adapter entries
        for job_id in ids:
            net = load_net(store, "site-g", jobs[job_id].net_version)
            entry = next(a for a in net.adapters if a.job_id == job_id)
            assert latest.adapter_for(entry.category, TASK).job_id == job_id
        for entry in latest.adapters:
            record = load_module_record(store, entry.adapter_id)
            assert record is not None and record.sha256 == entry.adapter_sha256
            assert hashlib.sha256(store.read_blob(record.sha256)).hexdigest() == record.sha256
        assert len(set(site.calls)) == len(ids)  # every job was evaluated (a cut-off one maybe twice)
        admin.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        site_server.stop(0)
