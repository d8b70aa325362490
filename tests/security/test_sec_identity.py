"""Identity per party against a running coordinator: the credential the coordinator shows one site is refused
by every other site, a site may announce only the hosts its admin registered, tokens expire, and both the
auth file and the coordinator's secret rotate without a restart."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent import futures

import grpc
import pytest

from common.bearer import bearer_token, hash_token
from common.guard import ADMIN, SITE, RequireTokenInterceptor
from coordinator.__main__ import main as coordinator_main
from coordinator.site_client import EvaluationError
from coordinator.site_identity import site_credential, site_credential_sha256
from coordinator.tokens import TokenTable, issue_token, new_token
from protos.nt.v1 import common_pb2, heartbeat_pb2, site_pb2, site_pb2_grpc
from tests.helpers.cluster import issue, stubs
from tests.helpers.cluster import coordinator as start
from tests.helpers.cluster import code_of, evaluation_plan

pytestmark = pytest.mark.security
ADAPTER = common_pb2.ModuleRef(module_id="a", sha256="2" * 64, size_bytes=1)


class Site(site_pb2_grpc.SiteAgentServicer):
    """Answers Evaluate and keeps the bearer token each call carried (what a hostile site would capture)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def Evaluate(self, request, context):
        with self.lock:
            self.seen.append(bearer_token(context.invocation_metadata()) or "")
        return site_pb2.EvaluateReply(metrics=[common_pb2.Metric(name="error_rate", value=1.0)])


def serve(servicer: Site, expected_sha256=None) -> tuple[grpc.Server, str]:
    interceptors = [RequireTokenInterceptor(expected_sha256)] if expected_sha256 else []
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=interceptors)
    site_pb2_grpc.add_SiteAgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def plan_for(site: str):
    return dataclasses.replace(evaluation_plan(), teacher_site_id=site)


@pytest.fixture()
def world(ray_session, tmp_path):
    auth_file, secret_file = tmp_path / "auth.json", tmp_path / "coordinator.token"
    tokens = {name: issue(auth_file, SITE, name) for name in ("site-a", "site-b")}
    tokens["admin"] = issue(auth_file, ADMIN, "ops")
    secret_file.write_text(new_token() + "\n")
    handle = start(tmp_path, auth_file=auth_file, coordinator_token_file=secret_file)
    clients = {name: stubs(handle.address, token) for name, token in tokens.items()}
    yield {"handle": handle, "c": clients, "auth_file": auth_file, "secret_file": secret_file, "tokens": tokens}
    for client in clients.values():
        client.close()
    handle.stop(grace_s=1)


def ping(client, site: str, endpoint: str):
    return client.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id=site, endpoint=endpoint), timeout=10)


def site_hash(world, site: str, capsys) -> str:
    """What the admin hands `site`: `python -m coordinator token site-credential`."""
    assert coordinator_main(["token", "site-credential", "--coordinator-token-file", str(world["secret_file"]),
                             "--name", site]) == 0
    return capsys.readouterr().out.strip()


def test_a_credential_captured_by_one_site_is_refused_by_another(world, capsys) -> None:
    """Site A is hostile: it records what the coordinator presents when it asks A to evaluate, then calls
    site B's Evaluate with it. With one coordinator token for all sites B accepted it; now B refuses it."""
    hostile, honest = Site(), Site()
    a_server, a_at = serve(hostile)  # A checks nothing: it only captures
    b_server, b_at = serve(honest, site_hash(world, "site-b", capsys))
    sites = world["handle"].scheduler.sites  # the coordinator's own SiteClient, as serve wires it
    try:
        assert ping(world["c"]["site-a"], "site-a", a_at).ok and ping(world["c"]["site-b"], "site-b", b_at).ok
        assert sites.evaluate(plan_for("site-a"), ADAPTER, "{}") == {"error_rate": 1.0}
        captured = hostile.seen[-1]
        assert captured and captured not in world["secret_file"].read_text()  # the secret itself never leaves

        with grpc.insecure_channel(b_at) as channel:  # A impersonates the coordinator towards B
            stub = site_pb2_grpc.SiteAgentStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Evaluate(site_pb2.EvaluateRequest(job_id="job-stolen"), timeout=5,
                              metadata=[("authorization", f"Bearer {captured}")])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and honest.seen == []

        assert sites.evaluate(plan_for("site-b"), ADAPTER, "{}") == {"error_rate": 1.0}  # B's own credential works
        assert honest.seen[-1] != captured
    finally:
        a_server.stop(0)
        b_server.stop(0)


def test_the_coordinators_secret_rotates_without_a_restart(world, capsys) -> None:
    old_hash = site_hash(world, "site-b", capsys)
    new_secret = new_token()
    honest = Site()
    # the site is rolled out accepting the old and the new credential, then the coordinator's file changes
    server, at = serve(honest, [old_hash, site_credential_sha256(new_secret, "site-b")])
    sites = world["handle"].scheduler.sites
    try:
        assert ping(world["c"]["site-b"], "site-b", at).ok
        assert sites.evaluate(plan_for("site-b"), ADAPTER, "{}")
        world["secret_file"].write_text(new_secret + "\n")
        assert sites.evaluate(plan_for("site-b"), ADAPTER, "{}")
        assert [hash_token(t) for t in honest.seen] == [old_hash, site_credential_sha256(new_secret, "site-b")]
        assert honest.seen[1] == site_credential(new_secret, "site-b")
    finally:
        server.stop(0)
    only_old, at = serve(Site(), old_hash)  # a site still on the old hash now refuses the rotated coordinator
    try:
        ping(world["c"]["site-b"], "site-b", at)
        with pytest.raises(EvaluationError, match="refused the coordinator's credentials"):
            sites.evaluate(plan_for("site-b"), ADAPTER, "{}")
    finally:
        only_old.stop(0)


@pytest.mark.parametrize("endpoint, code", [
    (":", "INVALID_ARGUMENT"), ("127.0.0.1", "INVALID_ARGUMENT"), ("127.0.0.1:0", "INVALID_ARGUMENT"),
    ("127.0.0.1:70000", "INVALID_ARGUMENT"), ("bad host:1", "INVALID_ARGUMENT"), ("a" * 300 + ":1", "INVALID_ARGUMENT"),
    ("169.254.169.254:80", "PERMISSION_DENIED"), ("[fe80::1]:7000", "PERMISSION_DENIED"),
    ("0.0.0.0:7000", "PERMISSION_DENIED"), ("224.0.0.1:7000", "PERMISSION_DENIED"),
    ("10.0.0.5:7000", "PERMISSION_DENIED"), ("evil.example:7000", "PERMISSION_DENIED"),  # no hosts registered
    ("127.0.0.1:7000", "OK"), ("localhost:7000", "OK"), ("[::1]:7000", "OK"),
])
def test_a_site_without_registered_hosts_announces_loopback_only(world, endpoint, code) -> None:
    if code == "OK":
        assert ping(world["c"]["site-a"], "site-a", endpoint).ok
        assert world["handle"].ledger.get_site("site-a").endpoint == endpoint
    else:
        assert code_of(lambda: ping(world["c"]["site-a"], "site-a", endpoint)).name == code
        assert (world["handle"].ledger.get_site("site-a") or type("none", (), {"endpoint": None})).endpoint != endpoint


def test_registered_hosts_are_the_allow_list_and_change_without_a_restart(world, capsys) -> None:
    auth_file, client = str(world["auth_file"]), world["c"]["site-a"]
    assert coordinator_main(["token", "new", "--auth-file", auth_file, "--role", "site", "--name", "site-a",
                             "--host", "Site-A.example", "--host", "10.1.0.0/16"]) == 0
    token = capsys.readouterr().out.strip()
    assert code_of(lambda: ping(client, "site-a", "127.0.0.1:7000")) == grpc.StatusCode.UNAUTHENTICATED  # rotated
    client = stubs(world["handle"].address, token)
    try:
        assert ping(client, "site-a", "site-a.example:7001").ok and ping(client, "site-a", "10.1.200.3:7001").ok
        for endpoint in ("127.0.0.1:7000", "10.2.0.1:7001", "site-b.example:7001", "site-a.example.evil:1"):
            assert code_of(lambda: ping(client, "site-a", endpoint)) == grpc.StatusCode.PERMISSION_DENIED, endpoint
        assert world["handle"].ledger.get_site("site-a").endpoint == "10.1.200.3:7001"
        # another site's announcement is its own business: site-b still has none registered (loopback)
        assert ping(world["c"]["site-b"], "site-b", "127.0.0.1:7002").ok
    finally:
        client.close()
    assert coordinator_main(["token", "list", "--auth-file", auth_file]) == 0
    assert "site\tsite-a\texpires " in capsys.readouterr().out  # the CLI's default lifetime
    assert coordinator_main(["token", "new", "--auth-file", auth_file, "--role", "admin", "--name", "x",
                             "--host", "h"]) == 2
    assert coordinator_main(["token", "new", "--auth-file", auth_file, "--role", "site", "--name", "x",
                             "--host", "not a host"]) == 2


def test_tokens_expire_without_a_restart(world) -> None:
    token = issue_token(world["auth_file"], SITE, "site-e", expires=time.time() + 1.5)
    client = stubs(world["handle"].address, token)
    try:
        assert ping(client, "site-e", "127.0.0.1:7003").ok
        time.sleep(1.6)
        with pytest.raises(grpc.RpcError) as err:
            ping(client, "site-e", "127.0.0.1:7003")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired at" in err.value.details()
    finally:
        client.close()
    doc = json.loads(world["auth_file"].read_text())
    assert set(doc["sites"]["site-e"]) == {"sha256", "expires"}
    assert TokenTable(world["auth_file"]).identify(world["tokens"]["site-a"]).name == "site-a"  # others unaffected


def test_an_endpoint_the_allow_list_no_longer_names_is_not_dialled(world, capsys) -> None:
    """The hosts change after the heartbeat was taken: the coordinator checks again before it dials."""
    site = Site()
    server, at = serve(site)
    try:
        assert ping(world["c"]["site-a"], "site-a", at).ok
        sites = world["handle"].scheduler.sites
        assert sites.evaluate(plan_for("site-a"), ADAPTER, "{}")
        assert coordinator_main(["token", "new", "--auth-file", str(world["auth_file"]), "--role", "site",
                                 "--name", "site-a", "--host", "site-a.example"]) == 0
        with pytest.raises(EvaluationError, match="not dialling site site-a: .* registered hosts are site-a.example"):
            sites.evaluate(plan_for("site-a"), ADAPTER, "{}")
        assert len(site.seen) == 1
    finally:
        server.stop(0)


def test_a_missing_or_empty_secret_stops_start_up(tmp_path) -> None:
    from coordinator.site_identity import SiteCredentials

    with pytest.raises(ValueError, match="cannot read the coordinator token file"):
        SiteCredentials(tmp_path / "missing.token")
    (tmp_path / "empty.token").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        SiteCredentials(tmp_path / "empty.token")
