"""TLS and mutual TLS by configuration, with throw-away certificates made in the test."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest

from common.guard import RequireTokenInterceptor, SITE
from common.security import ClientSecurity
from coordinator.ledger import Ledger
from coordinator.site_client import EvaluationError, SiteClient
from coordinator.site_identity import SiteCredentials, site_credential, site_credential_sha256
from coordinator.tokens import new_token
from protos.nt.v1 import common_pb2, registry_pb2, site_pb2_grpc
from site_agent.cli import _serving, build_parser
from site_agent.errors import SiteAgentError
from tests.helpers.cluster import issue, push_site, stubs, write_pki
from tests.helpers.cluster import coordinator as start
from tests.helpers.cluster import OneFigureSite, evaluation_plan

pytestmark = pytest.mark.security
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)  # the handshake never completes


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_pki(tmp_path_factory.mktemp("pki"))


def _list(client, timeout: float = 5.0):
    return client.registry.List(registry_pb2.ListModulesRequest(), timeout=timeout)


def _refused(client) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        _list(client, timeout=3.0)
    client.close()
    return err.value.code()


def test_tls_server_refuses_plaintext(ray_session, tmp_path, pki) -> None:
    auth_file = tmp_path / "auth.json"
    token = issue(auth_file, SITE, "site-a")
    handle = start(tmp_path, auth_file=auth_file, tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    try:
        assert _refused(stubs(handle.address, token)) in REFUSED  # plaintext
        # a client that does not trust the server's CA refuses the server
        assert _refused(stubs(handle.address, security=ClientSecurity.from_files(
            token, tls_ca=pki["rogue_ca"]))) in REFUSED
        good = stubs(handle.address, security=ClientSecurity.from_files(token, tls_ca=pki["ca"]))
        push_site(good.registry, "site-a", "3", seed=1)
        assert len(_list(good).modules) == 2
        good.close()
        # TLS does not replace the token
        anonymous = stubs(handle.address, security=ClientSecurity.from_files(None, tls_ca=pki["ca"]))
        with pytest.raises(grpc.RpcError) as err:
            _list(anonymous)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        anonymous.close()
    finally:
        handle.stop(grace_s=1)


def test_mutual_tls(ray_session, tmp_path, pki) -> None:
    auth_file = tmp_path / "auth.json"
    token = issue(auth_file, SITE, "site-a")
    handle = start(tmp_path, auth_file=auth_file, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                   tls_client_ca=pki["ca"])
    try:
        assert _refused(stubs(handle.address, token)) in REFUSED  # plaintext
        no_cert = ClientSecurity.from_files(token, tls_ca=pki["ca"])
        assert _refused(stubs(handle.address, security=no_cert)) in REFUSED
        rogue = ClientSecurity.from_files(token, tls_ca=pki["ca"], tls_cert=pki["rogue_cert"],
                                               tls_key=pki["rogue_key"])
        assert _refused(stubs(handle.address, security=rogue)) in REFUSED  # a client cert from another CA
        right = ClientSecurity.from_files(token, tls_ca=pki["ca"], tls_cert=pki["client_cert"],
                                               tls_key=pki["client_key"])
        client = stubs(handle.address, security=right)
        assert push_site(client.registry, "site-a", "3", seed=2)
        assert {m.site_id for m in _list(client).modules} == {"site-a"}
        client.close()
    finally:
        handle.stop(grace_s=1)


def test_coordinator_calls_sites_over_tls_with_its_token(tmp_path, pki) -> None:
    """The SiteAgent side as `python -m site_agent serve --tls-cert/--tls-key --coordinator-token-sha256` sets it up:
    the sha256 of the coordinator's credential for this site (and, during a rotation, of the next one)."""
    token = new_token()  # the coordinator's secret
    (tmp_path / "token").write_text(token)
    mine, next_one = site_credential_sha256(token, "site-a"), site_credential_sha256(new_token(), "site-a")
    args = build_parser().parse_args(["serve", "--workspace", str(tmp_path), "--coordinator", "127.0.0.1:1",
                                      "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
                                      "--coordinator-token-sha256", f"{mine.upper()}, {next_one}"])
    digest, credentials = _serving(args)
    assert digest == f"{mine},{next_one}" and credentials is not None
    server = grpc.server(futures.ThreadPoolExecutor(2), interceptors=[RequireTokenInterceptor(digest.split(","))])
    site_pb2_grpc.add_SiteAgentServicer_to_server(OneFigureSite(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    ledger = Ledger(tmp_path / "l.db")
    ledger.record_site("site-a", f"127.0.0.1:{port}")
    adapter = common_pb2.ModuleRef(module_id="a", sha256="2" * 64, size_bytes=1)
    try:
        security = ClientSecurity.from_files(None, tls_ca=pki["ca"])
        assert SiteClient(ledger, 5, security, SiteCredentials(tmp_path / "token")).evaluate(
            evaluation_plan(), adapter, "{}") == {"error_rate": 1.0}
        with pytest.raises(EvaluationError, match="did not answer"):  # plaintext to a TLS site: no answer
            SiteClient(ledger, 2, ClientSecurity(token=site_credential(token, "site-a"))).evaluate(evaluation_plan(), adapter, "{}")
        with pytest.raises(EvaluationError, match="UNAUTHENTICATED"):  # the secret itself is not the credential
            SiteClient(ledger, 5, ClientSecurity.from_files(token, tls_ca=pki["ca"])).evaluate(evaluation_plan(), adapter, "{}")
        with pytest.raises(SiteAgentError, match="64 hex digits"):
            _serving(build_parser().parse_args(["serve", "--workspace", str(tmp_path), "--coordinator", "h:1",
                                                "--coordinator-token-sha256", f"{mine},nothex"]))
        with pytest.raises(EvaluationError, match="UNAUTHENTICATED"):
            SiteClient(ledger, 5, ClientSecurity.from_files(None, tls_ca=pki["ca"])).evaluate(
                evaluation_plan(), adapter, "{}")
    finally:
        server.stop(0)
        ledger.close()
