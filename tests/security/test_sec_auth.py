"""Authentication and roles on every RPC of a real coordinator (plaintext, loopback), token rotation
without restart, and the coordinator's token on SiteAgent.Evaluate."""

from __future__ import annotations

import json
import time
from concurrent import futures

import grpc
import pytest
import torch

from common.bearer import SITE_TOKEN_ENV, hash_token
from common.guard import ADMIN, RequireTokenInterceptor, SITE
from common.registry_client import download, make_header, upload
from common.samples import samples_to_bytes
from common.security import ClientSecurity, PLAINTEXT
from coordinator import auth
from coordinator.__main__ import main as coordinator_main
from coordinator.admin import main as admin_main
from coordinator.ledger import Ledger
from coordinator.site_client import EvaluationError, SiteClient
from coordinator.tokens import AuthFileError, TokenTable, new_token, save_auth_file
from protos.nt.v1 import (common_pb2, control_pb2, heartbeat_pb2, registry_pb2, site_pb2_grpc)
from tests.helpers.cluster import OneFigureSite, code_of, evaluation_plan, issue, job_spec, push_site, site_modules, stubs
from tests.helpers.cluster import coordinator as start

pytestmark = pytest.mark.security
DENIED, UNAUTH = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    auth_file = root / "auth.json"
    tokens = {name: issue(auth_file, SITE, name) for name in ("site-a", "site-b")}
    tokens["admin"] = issue(auth_file, ADMIN, "alice")
    handle = start(root, auth_file=auth_file)
    clients = {name: stubs(handle.address, token) for name, token in tokens.items()}
    clients["anonymous"] = stubs(handle.address)
    clients["wrong"] = stubs(handle.address, new_token())
    ids = {site: push_site(clients[site].registry, site, "3", seed) for seed, site in enumerate(("site-a", "site-b"))}
    yield {"handle": handle, "auth_file": auth_file, "tokens": tokens, "c": clients, "ids": ids, "root": root}
    for client in clients.values():
        client.close()
    handle.stop(grace_s=1)


def every_call(c, module_id: str, site: str):
    """(name, thunk) for every RPC of the coordinator, as `c` would send it."""
    (spec, data), _ = site_modules(9)
    header = make_header(site, "3", common_pb2.CATEGORY, data, spec, feature_norm_mean=1.0)
    return [
        ("Upload", lambda: upload(c.registry, header, data)),
        ("Download", lambda: download(c.registry, module_id)),
        ("List", lambda: c.registry.List(registry_pb2.ListModulesRequest(site_id=site))),
        ("Delete", lambda: c.registry.Delete(registry_pb2.DeleteModuleRequest(module_id="nope", site_id=site))),
        ("Ping", lambda: c.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id=site, endpoint="127.0.0.1:1"))),
        ("SubmitJob", lambda: c.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec(site, site, "3")))),
        ("GetJob", lambda: c.control.GetJob(control_pb2.GetJobRequest(job_id="job-nope"))),
        ("ListJobs", lambda: c.control.ListJobs(control_pb2.ListJobsRequest())),
        ("CancelJob", lambda: c.control.CancelJob(control_pb2.CancelJobRequest(job_id="job-nope"))),
        ("WatchJob", lambda: list(c.control.WatchJob(control_pb2.WatchJobRequest(job_id="job-nope")))),
        ("GetNet", lambda: c.control.GetNet(control_pb2.GetNetRequest())),
    ]


@pytest.mark.parametrize("who", ["anonymous", "wrong"])
def test_missing_or_unknown_token_is_unauthenticated_everywhere(world, who) -> None:
    c = world["c"][who]
    for name, call in every_call(c, world["ids"]["site-a"][0], "site-a"):
        assert code_of(call) == UNAUTH, name
    metrics = world["handle"].metrics.rpc_requests
    assert metrics.labels(method="Upload", code="UNAUTHENTICATED")._value.get() >= 1  # counted, metrics first


def test_malformed_authorization_headers(world) -> None:
    address = world["handle"].address
    token = world["tokens"]["site-a"]
    with grpc.insecure_channel(address) as channel:
        stub = registry_pb2_grpc_stub(channel)
        for value in (token, f"Basic {token}", "Bearer", "Bearer  ", f"Bearer {token}x", "Bearer " + "a" * 600):
            with pytest.raises(grpc.RpcError) as err:
                stub.List(registry_pb2.ListModulesRequest(), metadata=[("authorization", value)])
            assert err.value.code() == UNAUTH, value
        assert stub.List(registry_pb2.ListModulesRequest(), metadata=[("authorization", f"bearer {token}")])


def registry_pb2_grpc_stub(channel):
    from protos.nt.v1 import registry_pb2_grpc
    return registry_pb2_grpc.ModuleRegistryStub(channel)


def test_site_role(world) -> None:
    a, ids = world["c"]["site-a"], world["ids"]
    calls = dict(every_call(a, ids["site-b"][0], "site-a"))
    for name in ("SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob", "GetNet"):
        assert code_of(calls[name]) == DENIED, name
    # its own: upload, list, ping, delete (of something absent)
    assert calls["Upload"]().module_id.startswith("site-a-category-3-")
    assert {m.site_id for m in calls["List"]().modules} == {"site-a"}
    assert calls["Ping"]().ok
    assert calls["Delete"]().deleted is False
    # a site may download what it needs to evaluate: another site's task module, never its category module
    assert download(a.registry, ids["site-b"][1])[0].site_id == "site-b"
    assert code_of(calls["Download"]) == DENIED
    # ... but never act for another site
    others = dict(every_call(a, ids["site-b"][0], "site-b"))
    for name in ("Upload", "List", "Ping"):
        assert code_of(others[name]) == DENIED, name
    err = pytest.raises(grpc.RpcError, a.registry.Delete,
                        registry_pb2.DeleteModuleRequest(module_id=ids["site-b"][0], site_id="site-b"))
    assert err.value.code() == DENIED and "site 'site-a' may not delete modules for site 'site-b'" in err.value.details()
    # pretending to own it does not help either: the record says site-b
    err = pytest.raises(grpc.RpcError, a.registry.Delete,
                        registry_pb2.DeleteModuleRequest(module_id=ids["site-b"][0], site_id="site-a"))
    assert err.value.code() == DENIED
    # no site id: only its own modules
    assert {m.site_id for m in a.registry.List(registry_pb2.ListModulesRequest()).modules} == {"site-a"}
    assert download(world["c"]["site-b"].registry, ids["site-b"][0])[0].site_id == "site-b"  # still there


def test_download_policy(world) -> None:
    """Own modules: always; another site's task modules (the generic ones a job evaluates with): yes; another
    site's category module or shared samples: PERMISSION_DENIED; samples: not even for an admin."""
    c, ids = world["c"], world["ids"]
    samples = samples_to_bytes(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    shared = upload(c["site-b"].registry, make_header("site-b", "3", common_pb2.SAMPLES, samples), samples).module_id
    assert download(c["site-b"].registry, shared)[1] == samples  # its owner
    for who, module, allowed in (("site-a", shared, False), ("admin", shared, False),
                                 ("site-a", ids["site-b"][0], False), ("site-a", ids["site-b"][1], True),
                                 ("site-a", ids["site-a"][0], True), ("admin", ids["site-b"][0], True),
                                 ("admin", ids["site-b"][1], True)):
        if allowed:
            assert download(c[who].registry, module)[0].module_id == module, (who, module)
        else:
            with pytest.raises(grpc.RpcError) as err:
                download(c[who].registry, module)
            assert err.value.code() == DENIED, (who, module)
            assert ("samples are read only by their site and the coordinator" in err.value.details()) == (
                module == shared)
    assert code_of(lambda: download(c["site-a"].registry, "site-b-nothing")) == grpc.StatusCode.NOT_FOUND


def test_admin_role(world) -> None:
    admin, ids = world["c"]["admin"], world["ids"]
    calls = dict(every_call(admin, ids["site-a"][0], "site-a"))
    for name in ("Upload", "Delete", "Ping"):  # sites' business only
        assert code_of(calls[name]) == DENIED, name
    assert {m.site_id for m in admin.registry.List(registry_pb2.ListModulesRequest()).modules} >= {"site-a", "site-b"}
    assert calls["Download"]()[0].site_id == "site-a"
    assert code_of(calls["GetJob"]) == grpc.StatusCode.NOT_FOUND  # authorised, then the servicer answers
    assert calls["ListJobs"]() is not None and calls["GetNet"]() is not None
    job = admin.control.SubmitJob(control_pb2.SubmitJobRequest(spec=job_spec("site-a", "site-b", "3", steps=5)))
    cancelled = admin.control.CancelJob(control_pb2.CancelJobRequest(job_id=job.job.job_id)).job
    assert cancelled.state in (control_pb2.CANCELLED, control_pb2.FAILED, control_pb2.SUCCEEDED)
    # the admin CLI with a token file; without it: refused
    token_file = world["root"] / "admin.token"
    token_file.write_text(world["tokens"]["admin"] + "\n")
    address = world["handle"].address
    assert admin_main(["--coordinator", address, "--token-file", str(token_file), "jobs"]) == 0
    assert admin_main(["--coordinator", address, "jobs"]) == 2


def test_token_rotation_and_revocation_without_restart(world, capsys) -> None:
    address, auth_file = world["handle"].address, str(world["auth_file"])
    assert coordinator_main(["token", "new", "--auth-file", auth_file, "--role", "site", "--name", "site-r"]) == 0
    first = capsys.readouterr().out.strip()
    assert len(first) >= 43 and first not in auth_file
    doc = json.loads(world["auth_file"].read_text())
    assert doc["sites"]["site-r"]["sha256"] == hash_token(first) and first not in world["auth_file"].read_text()
    assert abs(doc["sites"]["site-r"]["expires"] - time.time() - 365 * 86400) < 60  # the CLI's default lifetime
    assert world["auth_file"].stat().st_mode & 0o777 == 0o600
    old = stubs(address, first)
    assert old.heartbeat.Ping(heartbeat_pb2.PingRequest(site_id="site-r", endpoint="127.0.0.1:9")).ok

    assert coordinator_main(["token", "new", "--auth-file", auth_file, "--role", "site", "--name", "site-r"]) == 0
    second = capsys.readouterr().out.strip()
    new = stubs(address, second)
    ping = heartbeat_pb2.PingRequest(site_id="site-r", endpoint="127.0.0.1:9")
    assert code_of(lambda: old.heartbeat.Ping(ping)) == UNAUTH  # the rotated-out token is dead at once
    assert new.heartbeat.Ping(ping).ok

    assert coordinator_main(["token", "list", "--auth-file", auth_file]) == 0
    assert "site\tsite-r" in capsys.readouterr().out
    assert coordinator_main(["token", "revoke", "--auth-file", auth_file, "--role", "site", "--name", "site-r"]) == 0
    assert code_of(lambda: new.heartbeat.Ping(ping)) == UNAUTH
    assert coordinator_main(["token", "revoke", "--auth-file", auth_file, "--role", "site", "--name", "site-r"]) == 2

    # a broken auth file fails closed (UNAVAILABLE: clients retry) until it is fixed
    good = world["auth_file"].read_text()
    site_a = world["c"]["site-a"]
    try:
        world["auth_file"].write_text("{not json")
        assert code_of(lambda: site_a.registry.List(registry_pb2.ListModulesRequest())) == grpc.StatusCode.UNAVAILABLE
    finally:
        save_auth_file(world["auth_file"], json.loads(good))
    assert site_a.registry.List(registry_pb2.ListModulesRequest()) is not None
    old.close()
    new.close()


def test_bad_auth_file_stops_start_up(tmp_path) -> None:
    bad = tmp_path / "auth.json"
    bad.write_text(json.dumps({"sites": {"../x": "0" * 64}}))
    with pytest.raises(AuthFileError, match="invalid name"):
        TokenTable(bad)
    bad.write_text(json.dumps({"sites": {"a": "not-a-digest"}}))
    with pytest.raises(AuthFileError, match="sha256"):
        TokenTable(bad)
    with pytest.raises(AuthFileError, match="cannot read"):
        TokenTable(tmp_path / "missing.json")


# coordinator -> site ------------------------------------------------------------------------------

def test_site_requires_the_coordinators_token(tmp_path) -> None:
    token = new_token()
    server = grpc.server(futures.ThreadPoolExecutor(2),
                         interceptors=[RequireTokenInterceptor(hash_token(token))])
    site_pb2_grpc.add_SiteAgentServicer_to_server(OneFigureSite(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ledger = Ledger(tmp_path / "l.db")
    ledger.record_site("site-a", f"127.0.0.1:{port}")
    adapter = common_pb2.ModuleRef(module_id="a", sha256="2" * 64, size_bytes=1)
    try:
        good = SiteClient(ledger, 5, ClientSecurity(token=token))
        assert good.evaluate(evaluation_plan(), adapter, "{}") == {"error_rate": 1.0}
        for security in (PLAINTEXT, ClientSecurity(token=new_token())):
            start_s = time.monotonic()
            with pytest.raises(EvaluationError, match="refused the coordinator's credentials: UNAUTHENTICATED"):
                SiteClient(ledger, 5, security).evaluate(evaluation_plan(), adapter, "{}")
            assert time.monotonic() - start_s < 4  # refused at once, not a timeout
    finally:
        server.stop(0)
        ledger.close()


def test_site_agent_cli_and_heartbeat_send_the_site_token(world, monkeypatch, capsys) -> None:
    from site_agent.cli import main as site_main
    from site_agent.heartbeat import Heartbeat

    address = world["handle"].address
    token_file = world["root"] / "site-a.token"
    token_file.write_text(world["tokens"]["site-a"])
    assert site_main(["list", "--site-id", "site-a", "--coordinator", address, "--token-file", str(token_file)]) == 0
    assert "site-a-category-3-" in capsys.readouterr().out
    assert site_main(["list", "--site-id", "site-b", "--coordinator", address, "--token-file", str(token_file)]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert site_main(["list", "--site-id", "site-a", "--coordinator", address]) == 2  # no token
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv(SITE_TOKEN_ENV, world["tokens"]["site-b"])
    assert site_main(["list", "--site-id", "site-b", "--coordinator", address]) == 0
    assert site_main(["delete", "--site-id", "site-b", "--coordinator", address, world["ids"]["site-a"][0]]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err

    security = ClientSecurity(token=world["tokens"]["site-a"])
    beat = Heartbeat(address, "site-a", "127.0.0.1:1", 5.0, security)
    imposter = Heartbeat(address, "site-b", "127.0.0.1:1", 5.0, security)
    try:
        assert beat.ping() and not imposter.ping()
    finally:
        beat.stop()
        imposter.stop()


def test_every_coordinator_method_has_a_role_rule() -> None:
    """A new RPC must be given a rule on purpose: unlisted registry/heartbeat methods are refused to all."""
    from protos.nt.v1 import control_pb2, heartbeat_pb2, registry_pb2

    for module, service in ((registry_pb2, "ModuleRegistry"), (heartbeat_pb2, "Heartbeat"), (control_pb2, "Control")):
        for method in module.DESCRIPTOR.services_by_name[service].methods_by_name:
            roles = auth.roles_for(f"/transplant.v1.{service}/{method}")
            assert roles, f"{service}/{method} has no role rule in coordinator.auth.METHOD_ROLES"
            assert roles == ({ADMIN} if service == "Control" else roles)
    assert auth.roles_for("/transplant.v1.ModuleRegistry/Purge") == frozenset()
