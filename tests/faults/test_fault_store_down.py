"""The object store down or slow (S3 protocol, moto_server behind a TCP proxy we cut): bounded retries
with backoff, then a clear failure; nothing half-stored; everything works again once it is back."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlparse

import grpc
import pytest
from minio import Minio

from common.registry_client import download, make_header, upload
from coordinator.store import open_store
from coordinator.manifests import list_module_records
from protos.nt.v1 import common_pb2, control_pb2, registry_pb2
from tests.helpers.faults import TcpProxy, wait_terminal
from tests.helpers.cluster import coordinator, job_spec, push_site, site_modules, stubs
from tests.helpers.s3server import TEST_ACCESS_KEY, TEST_SECRET_KEY, start_s3_server

pytestmark = [pytest.mark.faults, pytest.mark.integration]
BUCKET = "faults"


@pytest.fixture
def s3(tmp_path):
    url, stop = start_s3_server()
    endpoint = urlparse(url).netloc
    host, port = endpoint.split(":")
    proxy = TcpProxy((host, int(port)))
    store_url = (f"s3://{BUCKET}?endpoint={proxy.address}&secure=0&access_key={TEST_ACCESS_KEY}"
                 f"&secret_key={TEST_SECRET_KEY}&attempts=3&base_delay=0.05")
    direct = Minio(endpoint, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET_KEY, secure=False)
    yield proxy, store_url, direct
    proxy.close()
    stop()


def objects(direct: Minio) -> dict[str, int]:
    return {o.object_name: o.size for o in direct.list_objects(BUCKET, recursive=True)}


def test_store_down_then_back(ray_session, tmp_path, s3) -> None:
    proxy, store_url, direct = s3
    handle = coordinator(tmp_path, store_url=store_url, max_concurrent_jobs=1)
    c = stubs(handle.address)
    try:
        stored = push_site(c.registry, "site-t", "3", seed=1) + push_site(c.registry, "site-g", "0", seed=2)
        # a long job holds the only job driver; the next one waits in the queue
        blocker = c.control.SubmitJob(control_pb2.SubmitJobRequest(
            spec=job_spec("site-t", "site-g", "3", steps=100_000))).job.job_id
        queued = c.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("site-t", "site-g", "3"))).job.job_id
        before = objects(direct)

        proxy.down()
        (spec, data), _ = site_modules(7)
        header = make_header("site-t", "7", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            upload(c.registry, header, data)
        elapsed = time.monotonic() - start
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "object store unavailable" in err.value.details()
        assert elapsed < 10, f"retries are bounded, took {elapsed:.1f} s"
        for call in (lambda: c.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("site-t", "site-g", "3"))),
                     lambda: c.control.GetNet(control_pb2.GetNetRequest()),
                     lambda: c.registry.List(registry_pb2.ListModulesRequest()),
                     lambda: download(c.registry, stored[0])):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "object store unavailable" in err.value.details()
        # the queued job's driver cannot resolve its modules: it fails with the reason, the blocker is cancelled
        c.control.CancelJob(control_pb2.CancelJobRequest(job_id=blocker))
        failed = wait_terminal(c.control, [queued], timeout=60)[queued]
        assert failed.state == control_pb2.FAILED and "StoreUnavailableError" in failed.error, failed.error
        assert c.control.GetJob(control_pb2.GetJobRequest(job_id=queued)).error == failed.error  # the ledger still answers

        proxy.up()
        after = objects(direct)
        assert after == before or set(after) - set(before) <= {k for k in after if k.startswith("blobs/")}, \
            "an outage left documents or temp objects behind"
        assert not [k for k in after if k.startswith("tmp/")]
        store = open_store(store_url)
        assert {r.module_id for r in list_module_records(store)} == set(stored)  # nothing half-registered
        for module_id in stored:
            info, blob = download(c.registry, module_id)
            assert hashlib.sha256(blob).hexdigest() == info.sha256
        assert upload(c.registry, header, data).sha256 == header.sha256  # and it works again

        proxy.delay_s = 0.02  # slow, not down: still fine
        assert download(c.registry, stored[1])[0].module_id == stored[1]
        proxy.delay_s = 0.0
    finally:
        proxy.up()
        c.close()
        handle.stop(grace_s=1)
