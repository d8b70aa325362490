"""A small system for the security and fault tests: throw-away PKI, tiny modules, tokens, a coordinator on loopback."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.registry_client import make_header, upload
from common.security import ClientSecurity
from coordinator.jobs import JobPlan
from coordinator.manifests import ModuleRecord
from coordinator.server import CoordinatorConfig, CoordinatorHandle, start_coordinator
from coordinator.tokens import issue_token
from coordinator.job_states import TERMINAL_PB
from protos.nt.v1 import (common_pb2, control_pb2, control_pb2_grpc, heartbeat_pb2_grpc, registry_pb2_grpc, site_pb2,
                          site_pb2_grpc)
from transplant.architectures import teacher_specs, vgg_small
from transplant.job import JobConfig
from transplant.spec import build_module, weights_to_bytes

TASK = "classification"
SMALL = vgg_small(width=4, depth=3, image_size=16, in_channels=1, fc=32)
TERMINAL = TERMINAL_PB  # REJECTED included


# PKI --------------------------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, cn: str, server: bool) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for 127.0.0.1/localhost (server) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def write_pki(folder: Path) -> dict[str, Path]:
    """ca.pem, server.{pem,key}, client.{pem,key} (same CA), rogue_ca.pem, rogue.{pem,key} (another CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, rogue_ca = Authority.create("test CA"), Authority.create("rogue CA")
    files = {"ca": ca.pem, "rogue_ca": rogue_ca.pem}
    for name, authority, server in (("server", ca, True), ("client", ca, False), ("rogue", rogue_ca, False),
                                    ("rogue_server", rogue_ca, True)):
        files[f"{name}_cert"], files[f"{name}_key"] = authority.issue(f"{name}.test", server)
    paths = {}
    for name, data in files.items():
        path = folder / (name + (".key" if name.endswith("_key") else ".pem"))
        path.write_bytes(data)
        path.chmod(0o600)
        paths[name] = path
    return paths


# modules --------------------------------------------------------------------------------------------

def site_modules(seed: int) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """((category spec_json, weights), (task spec_json, weights)) of an untrained tiny VGG; seed varies bytes."""
    specs = teacher_specs(SMALL, (TASK,))
    torch.manual_seed(seed)
    category, task = build_module(specs.category), build_module(specs.tasks[TASK])
    return (category.spec.dumps(), weights_to_bytes(category)), (task.spec.dumps(), weights_to_bytes(task))


def push_site(registry, site: str, category: str, seed: int, timeout: float = 60.0) -> list[str]:
    """Uploads a category and a task module for `site`; returns the module ids."""
    (cat_spec, cat_data), (task_spec, task_data) = site_modules(seed)
    ids = [upload(registry, make_header(site, category, common_pb2.CATEGORY, cat_data, cat_spec,
                                        feature_norm_mean=1.0 + seed % 7, num_images=10), cat_data,
                  timeout=timeout).module_id]
    ids.append(upload(registry, make_header(site, category, common_pb2.TASK, task_data, task_spec, task=TASK),
                      task_data, timeout=timeout).module_id)
    return ids


def job_spec(teacher: str, generic: str, category: str, steps: int = 20, layers: int = 2,
             seed: int = 0) -> control_pb2.TransplantJobSpec:
    return control_pb2.TransplantJobSpec(category=category, task=TASK, method="back_distill",
                                         adapter=control_pb2.AdapterConfig(layers=layers, kernel_size=1),
                                         seed=seed, teacher_site_id=teacher, generic_site_id=generic, steps=steps)


# tokens and clients --------------------------------------------------------------------------------

def issue(auth_file: Path, role: str, name: str) -> str:
    return issue_token(auth_file, role, name)


@dataclass
class Stubs:
    channel: grpc.Channel
    registry: registry_pb2_grpc.ModuleRegistryStub
    control: control_pb2_grpc.ControlStub
    heartbeat: heartbeat_pb2_grpc.HeartbeatStub

    def close(self) -> None:
        self.channel.close()


def stubs(address: str, token: str | None = None, security: ClientSecurity | None = None) -> Stubs:
    security = security or ClientSecurity(token=token)
    channel = security.channel(address)
    return Stubs(channel, registry_pb2_grpc.ModuleRegistryStub(channel), control_pb2_grpc.ControlStub(channel),
                 heartbeat_pb2_grpc.HeartbeatStub(channel))


def coordinator(root: Path, **config) -> CoordinatorHandle:
    """A coordinator on 127.0.0.1 (any free port), local store and state under `root`; Ray must be up."""
    config.setdefault("store_url", f"local://{root / 'store'}")
    config.setdefault("state_dir", root / "state")
    return start_coordinator(CoordinatorConfig(port=0, **config))


# coordinator -> site, and status codes --------------------------------------------------------------

def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


class OneFigureSite(site_pb2_grpc.SiteAgentServicer):
    """Answers every evaluation with one figure: error_rate 1.0."""

    def Evaluate(self, request, context):
        return site_pb2.EvaluateReply(metrics=[common_pb2.Metric(name="error_rate", value=1.0)], site_id="site-a")


def evaluation_plan() -> JobPlan:
    """A plan whose modules need not exist: for tests of the coordinator -> site call alone."""
    record = ModuleRecord(module_id="m", site_id="site-a", category="3", role="category", task="",
                          spec_json="{}", sha256="0" * 64, size_bytes=1)
    task = ModuleRecord(module_id="t", site_id="site-a", category="3", role="task", task=TASK,
                        spec_json="{}", sha256="1" * 64, size_bytes=1)
    return JobPlan("job-x", "local:///nowhere", JobConfig.create(TASK), "site-a", record, task, task, record)
