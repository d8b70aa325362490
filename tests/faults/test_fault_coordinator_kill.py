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
from coordinator.committer import Committer
from coordinator.events import EventHub
from coordinator.jobs import CandidateResult, JobPlan, TrainedAdapter
from coordinator.ledger import EVALUATING, REJECTED, SUCCEEDED, Ledger
from coordinator.netbook import NetBook, Proposal, proposal_for
from coordinator.store import LocalStore
from coordinator.manifests import (ModuleRecord, list_net_versions, load_latest_net, load_module_record,
                                         load_net, net_latest_key, net_version_key)
from coordinator.tokens import new_token
from protos.nt.v1 import control_pb2, heartbeat_pb2
from tests.helpers.faults import InstantSite, serve_site, wait_terminal
from tests.helpers.cluster import TASK, issue, job_spec, push_site, stubs
from transplant.job import JobConfig

pytestmark = [pytest.mark.faults, pytest.mark.integration]
CATEGORIES = ("1", "2", "3", "4", "5")


def _claimed(ledger: Ledger, category: str, value: float) -> tuple[str, Proposal]:
    """A job stopped after the ledger claimed its commit: its proposal is in the claim."""
    job = ledger.create_job({"category": category})
    assert ledger.transition(job.id, "RUNNING") and ledger.transition(job.id, EVALUATING)
    record = lambda site, role, cat, task="": ModuleRecord(f"{site}-{role}-{cat}", site, cat, role, task, "{}",  # noqa: E731
                                                           "0" * 64, 1, feature_norm_mean=1.0)
    plan = JobPlan(job.id, "", JobConfig.create(TASK), "site-t", record("site-t", "category", category),
                   record("site-t", "task", category, TASK), record("site-g", "task", "0", TASK),
                   record("site-g", "category", "0"))
    adapter = TrainedAdapter("back_distill", f"coordinator-adapter-{category}", "1" * 64, 1, "{}", 5, 0.1)
    proposal = proposal_for(plan, CandidateResult("back_distill", adapter, {"error_rate": value,
                                                                             "teacher_error_rate": 5.0}), 30.0)
    assert ledger.claim_commit(job.id, {"at": time.time() - 1, "proposal": proposal.to_doc()})
    return job.id, proposal


def test_a_restart_finishes_every_half_done_commit(tmp_path) -> None:
    """Cut off after the claim: committed (the manifest is the commit point) -> SUCCEEDED with its version,
    never committed twice; not yet committed -> the gate and the commit run now; unclaimed -> re-run."""
    store, ledger = LocalStore(tmp_path / "store"), Ledger(tmp_path / "ledger.db")
    book = NetBook(store)
    committed, proposal = _claimed(ledger, "3", 7.0)
    assert book.commit(proposal)[0] == 1  # ... and then the coordinator died
    pending_commit, _ = _claimed(ledger, "4", 8.0)
    too_far, _ = _claimed(ledger, "5", 60.0)
    cut_off = ledger.create_job({"category": "6"})
    assert ledger.transition(cut_off.id, "RUNNING") and ledger.transition(cut_off.id, EVALUATING)
    ledger.close()

    reopened = Ledger(tmp_path / "ledger.db")  # a new coordinator process
    repaired = Committer(reopened, EventHub(), sites=None, netbook=NetBook(store)).repair()
    assert sorted(repaired) == sorted([committed, pending_commit, too_far])
    assert (reopened.get_job(committed).state, reopened.get_job(committed).net_version) == (SUCCEEDED, 1)
    assert (reopened.get_job(pending_commit).state, reopened.get_job(pending_commit).net_version) == (SUCCEEDED, 2)
    assert reopened.get_job(too_far).state == REJECTED and "points behind" in reopened.get_job(too_far).reason
    assert list_net_versions(store, "site-g") == [1, 2]  # one commit each, none twice
    assert {a.job_id for a in load_latest_net(store, "site-g").adapters} == {committed, pending_commit}
    assert reopened.get_job(cut_off.id).state == EVALUATING  # not claimed: recovery re-runs it
    assert reopened.recover(3) == [cut_off.id]
    reopened.close()


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
    site_server, endpoint = serve_site(site, token=coordinator_token, sites=tuple(tokens))  # refuses Evaluate without the token
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
