"""A Ray worker dying in the middle of a job: the job is retried (bounded), or fails with a reason."""

from __future__ import annotations

import functools

import pytest

from coordinator import training
from protos.nt.v1 import control_pb2, heartbeat_pb2
from tests.helpers.faults import InstantSite, crashing_body, serve_site, wait_terminal
from tests.helpers.cluster import coordinator, job_spec, push_site, stubs

pytestmark = [pytest.mark.faults, pytest.mark.integration]


@pytest.fixture
def crashing(monkeypatch, tmp_path):
    """Every candidate's Ray task runs a body that os._exit(1)s after its first progress event (the
    training module's TRAIN_BODY, swapped in the driver: no test hook in the production path)."""
    times: dict[str, int] = {}
    marker_dir = tmp_path / "crashes"
    marker_dir.mkdir()
    monkeypatch.setattr(training, "TRAIN_BODY", functools.partial(crashing_body, str(marker_dir), times))
    return times, marker_dir


def test_worker_death_is_retried_then_fails_after_max_attempts(ray_session, tmp_path, crashing) -> None:
    times, marker_dir = crashing
    site, endpoint = serve_site(InstantSite())
    handle = coordinator(tmp_path, max_attempts=2, max_concurrent_jobs=2, progress_every=1)
    c = stubs(handle.address)
    try:
        push_site(c.registry, "site-t", "3", seed=1)
        push_site(c.registry, "site-t", "4", seed=2)
        push_site(c.registry, "site-g", "0", seed=3)
        assert c.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id="site-t", endpoint=endpoint)).ok
        times["3"], times["4"] = 1, 99  # "3": dies once; "4": dies every time
        once = c.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("site-t", "site-g", "3", steps=50))).job
        always = c.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("site-t", "site-g", "4", steps=50))).job
        jobs = wait_terminal(c.control, [once.job_id, always.job_id], timeout=150)

        retried = jobs[once.job_id]
        assert retried.state == control_pb2.SUCCEEDED, retried.error
        assert retried.attempts == 2 and retried.net_version >= 1
        assert len(list(marker_dir.glob(f"{once.job_id}.crash-*"))) == 1

        failed = jobs[always.job_id]
        assert failed.state == control_pb2.FAILED and failed.attempts == 2
        assert failed.error.startswith("Ray worker failed 2 times; last: ") and "Error" in failed.error
        assert len(list(marker_dir.glob(f"{always.job_id}.crash-*"))) == 2
        net = c.control.GetNet(control_pb2.GetNetRequest())
        assert [(e.category, e.job_id) for e in net.entries if e.adapter_id] == [("3", once.job_id)]
    finally:
        c.close()
        handle.stop(grace_s=1)
        site.stop(0)
