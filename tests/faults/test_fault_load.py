"""Load on loopback, bounded in count and time: 20 concurrent site clients (own channel, own token)
uploading, then 50 jobs submitted concurrently by admins; a fake site evaluates at once (one site never
answers: its jobs time out while the others go on). Afterwards every module's sha256 verifies from the
store and every job has ended. Figures: uploads/s, jobs/s, errors (shown with `pytest -s`, and logged)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from common.guard import ADMIN, SITE
from common.registry_client import make_header, upload
from coordinator.store import LocalStore
from coordinator.manifests import list_module_records, list_net_versions, load_latest_net
from coordinator.tokens import new_token
from protos.nt.v1 import common_pb2, control_pb2, heartbeat_pb2
from tests.helpers.faults import InstantSite, serve_site, wait_terminal
from tests.helpers.cluster import coordinator, issue, job_spec, push_site, site_modules, stubs

pytestmark = [pytest.mark.faults, pytest.mark.integration]
log = logging.getLogger(__name__)
SITES, JOBS, ADMINS = 20, 50, 5
SILENT = f"site-{SITES - 1}"  # its evaluations never come back
TIME_LIMIT_S = 200.0


def test_load(ray_session, tmp_path) -> None:
    auth_file, token_file = tmp_path / "auth.json", tmp_path / "coordinator.token"
    tokens = {f"site-{i}": issue(auth_file, SITE, f"site-{i}") for i in range(SITES)}
    admin_token = issue(auth_file, ADMIN, "ops")
    coordinator_token = new_token()
    token_file.write_text(coordinator_token)
    site = InstantSite()
    site.silent.add(SILENT)
    site_server, endpoint = serve_site(site, token=coordinator_token, threads=16, sites=tuple(tokens))
    handle = coordinator(tmp_path, auth_file=auth_file, coordinator_token_file=token_file, max_concurrent_jobs=2,
                         eval_timeout_s=3.0, rpc_threads=32)
    errors: list[str] = []
    lock = threading.Lock()
    started = time.monotonic()
    try:
        # 1. 20 sites upload at once, each over its own channel with its own token
        barrier = threading.Barrier(SITES)

        def site_client(i: int) -> int:
            name = f"site-{i}"
            client = stubs(handle.address, tokens[name])
            try:
                barrier.wait(30)
                done = len(push_site(client.registry, name, f"c{i}", seed=100 + i))
                (spec, data), _ = site_modules(500 + i)  # a third module: another category
                upload(client.registry, make_header(name, f"x{i}", common_pb2.CATEGORY, data, spec,
                                                    feature_norm_mean=1.0), data, chunk_size=512)
                client.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id=name, endpoint=endpoint))
                return done + 1
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"{name}: {exc.code().name}: {exc.details()}")
                return 0
            finally:
                client.close()

        t0 = time.monotonic()
        with ThreadPoolExecutor(SITES) as pool:
            uploads = sum(pool.map(site_client, range(SITES)))
        upload_s = time.monotonic() - t0

        # 2. 50 jobs submitted concurrently by 5 admins
        def admin_client(a: int) -> list[str]:
            client, ids = stubs(handle.address, admin_token), []
            try:
                for k in range(a, JOBS, ADMINS):
                    teacher = 1 + k % (SITES - 1)
                    spec = job_spec(f"site-{teacher}", "site-0", f"c{teacher}", steps=10, seed=k)
                    try:
                        ids.append(client.control.SubmitJob(control_pb2.SubmitJobRequest(spec=spec), timeout=30).job.job_id)
                    except grpc.RpcError as exc:
                        with lock:
                            errors.append(f"submit {k}: {exc.code().name}: {exc.details()}")
                return ids
            finally:
                client.close()

        t1 = time.monotonic()
        with ThreadPoolExecutor(ADMINS) as pool:
            job_ids = [j for ids in pool.map(admin_client, range(ADMINS)) for j in ids]
        admin = stubs(handle.address, admin_token)
        jobs = wait_terminal(admin.control, job_ids, timeout=TIME_LIMIT_S - (time.monotonic() - started))
        jobs_s = time.monotonic() - t1
        site.release.set()

        # 3. everything verifies
        store = LocalStore(tmp_path / "store")
        records = list_module_records(store)
        for record in records:
            blob = store.read_blob(record.sha256)
            assert hashlib.sha256(blob).hexdigest() == record.sha256 and len(blob) == record.size_bytes, record.module_id
        states = {}
        for job in jobs.values():
            states[control_pb2.JobState.Name(job.state)] = states.get(control_pb2.JobState.Name(job.state), 0) + 1
        silent_jobs = {j for j, job in jobs.items() if job.spec.teacher_site_id == SILENT}
        for job_id, job in jobs.items():
            if job_id in silent_jobs:
                assert job.state == control_pb2.FAILED and "did not answer evaluation within 3 s" in job.error
            elif job.state == control_pb2.REJECTED:  # the site scores every job alike: a repeat is no better
                assert "not better than the route's current adapter" in job.reason, job.reason
            else:
                assert job.state == control_pb2.SUCCEEDED, (job_id, job.error)
        succeeded = sum(job.state == control_pb2.SUCCEEDED for job in jobs.values())
        assert succeeded == SITES - 2  # one result per route entered the net, every later one was rejected
        assert list_net_versions(store, "site-0") == list(range(1, succeeded + 1))
        assert sorted(job.net_version for job in jobs.values() if job.net_version) == list(range(1, succeeded + 1))
        latest = load_latest_net(store, "site-0")
        assert len({(a.category, a.task) for a in latest.adapters}) == len(latest.adapters) == SITES - 2

        figures = (f"load: {SITES} sites, {uploads} uploads in {upload_s:.2f} s = {uploads / upload_s:.1f} uploads/s; "
                   f"{len(job_ids)} jobs ended in {jobs_s:.2f} s = {len(job_ids) / jobs_s:.2f} jobs/s "
                   f"({states}); {len(records)} modules verified; errors: {len(errors)}")
        print("\n" + figures)
        log.warning(figures)
        (tmp_path / "load-figures.txt").write_text(figures + "\n")
        assert not errors, errors
        assert uploads == 3 * SITES and len(job_ids) == JOBS
        assert time.monotonic() - started < TIME_LIMIT_S
        admin.close()
    finally:
        site.release.set()
        handle.stop(grace_s=1)
        site_server.stop(0)
