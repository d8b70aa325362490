"""The demo's sites: who trains what, how each is started, and when it is ready (asked over gRPC)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from demo.processes import Processes
from protos.nt.v1 import common_pb2, control_pb2, control_pb2_grpc, registry_pb2, registry_pb2_grpc


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    data: str                   # site_agent data source, e.g. "digits:3" or "shapes:dog"
    train_args: tuple[str, ...]  # architecture / training flags for `site_agent run`

    @property
    def category(self) -> str:
        return self.data.split(":")[-1]


@dataclass(frozen=True)
class Group:
    """Sites sharing one architecture; the first one's task modules are the generic ones."""

    sites: tuple[SiteSpec, ...]
    tasks: tuple[str, ...]
    image_bytes: int            # bytes of one training image + its labels, as the site stores them

    @property
    def generic(self) -> SiteSpec:
        return self.sites[0]


def default_groups(quick: bool) -> list[Group]:
    digits_args = ("--size", "16", "--width", "16", "--depth", "4", "--epochs", "20")
    digits = Group(tuple(SiteSpec(f"site-digit{d}", f"digits:{d}", digits_args) for d in ("3", "5", "8")),
                   ("classification",), image_bytes=16 * 16 + 1)
    if quick:
        return [digits]
    shapes_args = ("--size", "32", "--width", "16", "--depth", "3", "--epochs", "12", "--batch-size", "32",
                   "--n-train", "3000", "--n-test", "400", "--dropout", "0", "--seg-weight", "3")
    shapes = Group(tuple(SiteSpec(f"site-{c}", f"shapes:{c}", shapes_args) for c in ("dog", "cat", "cow")),
                   ("classification", "segmentation"), image_bytes=3 * 32 * 32 + 32 * 32 + 1)
    return [digits, shapes]


def start_site(procs: Processes, site: SiteSpec, workspace: Path, address: str, port: int, samples: int) -> None:
    """`site_agent run`: train, push, then serve SiteAgent on `port` (and ping the coordinator)."""
    procs.start(site.site_id, ["-m", "site_agent", "run", "--site-id", site.site_id, "--data", site.data,
                               "--workspace", str(workspace), "--coordinator", address,
                               "--port", str(port), "--metrics-port", "0", "--heartbeat-s", "2", "--no-progress",
                               "--share-samples", str(max(samples, 0)), *site.train_args])


def coordinator_ready(control: control_pb2_grpc.ControlStub) -> bool:
    try:
        control.ListJobs(control_pb2.ListJobsRequest(limit=1), timeout=2)
        return True
    except grpc.RpcError:
        return False


def site_modules(registry: registry_pb2_grpc.ModuleRegistryStub, site_id: str) -> list[registry_pb2.ModuleInfo]:
    return list(registry.List(registry_pb2.ListModulesRequest(site_id=site_id), timeout=10).modules)


def serving(endpoint: str, timeout_s: float = 0.5) -> bool:
    """True once a gRPC server answers the HTTP/2 handshake at `endpoint`."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
            return True
        except grpc.FutureTimeoutError:
            return False


def site_ready(registry: registry_pb2_grpc.ModuleRegistryStub, site: SiteSpec, endpoint: str) -> bool:
    """The site serves SiteAgent, which `run` starts only after pushing: its modules are in the registry too."""
    if not serving(endpoint):
        return False
    return any(m.role == common_pb2.CATEGORY for m in site_modules(registry, site.site_id))
