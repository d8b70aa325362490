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
    train_args: tuple[str, ...]  # training flags for `site_agent run` (the architecture is the group's)

    @property
    def category(self) -> str:
        return self.data.split(":")[-1]


@dataclass(frozen=True)
class Group:
    """Sites sharing one architecture; the first one's task modules are the generic ones.

    With a base, the demo first trains a teacher on a category no site has (`base_data`), publishes it
    (`admin base publish`) and every site fine-tunes from it (`--init-from`) for `finetune_args`'s epochs,
    as the paper's VOC nets all start from one ImageNet VGG-16; without one, each starts from scratch."""

    sites: tuple[SiteSpec, ...]
    tasks: tuple[str, ...]
    image_bytes: int            # bytes of one training image + its labels, as the site stores them
    arch_args: tuple[str, ...] = ()      # the group's architecture flags (the base's, so every site's)
    base_data: str = ""                  # what the group's base trains on
    finetune_args: tuple[str, ...] = ()  # flags replacing the sites' own epochs when they start from the base

    @property
    def generic(self) -> SiteSpec:
        return self.sites[0]

    @property
    def base_name(self) -> str:
        return f"{self.base_data.replace(':', '-')}-base"


def default_groups(quick: bool) -> list[Group]:
    digits_args = ("--epochs", "20")
    digits = Group(tuple(SiteSpec(f"site-digit{d}", f"digits:{d}", digits_args) for d in ("3", "5", "8")),
                   ("classification",), image_bytes=16 * 16 + 1, arch_args=("--size", "16", "--width", "16",
                                                                            "--depth", "4"),
                   base_data="digits:0", finetune_args=("--epochs", "10"))
    if quick:
        return [digits]
    shapes_args = ("--epochs", "12", "--batch-size", "32", "--n-train", "3000", "--n-test", "400", "--seg-weight", "3")
    shapes = Group(tuple(SiteSpec(f"site-{c}", f"shapes:{c}", shapes_args) for c in ("dog", "cat", "cow")),
                   ("classification", "segmentation"), image_bytes=3 * 32 * 32 + 32 * 32 + 1,
                   arch_args=("--size", "32", "--width", "16", "--depth", "3", "--dropout", "0"),
                   base_data="shapes:horse",
                   finetune_args=("--epochs", "6"))
    return [digits, shapes]


def _replaced(args: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """`args` with each flag of `new` (flag, value pairs) set to new's value."""
    out, given = list(args), dict(zip(new[::2], new[1::2]))
    for i in range(0, len(out) - 1, 2):
        if out[i] in given:
            out[i + 1] = given.pop(out[i])
    return (*out, *[x for pair in given.items() for x in pair])


def start_base(procs: Processes, group: Group, workspace: Path) -> None:
    """`site_agent train` of the group's base, on a category none of its sites has (`procs.finish` waits)."""
    procs.start(group.base_name, ["-m", "site_agent", "train", "--site-id", group.base_name, "--data",
                                  group.base_data, "--workspace", str(workspace), "--no-progress", *group.arch_args,
                                  *group.generic.train_args])


def start_site(procs: Processes, group: Group, site: SiteSpec, workspace: Path, address: str, port: int,
               samples: int, base: bool) -> None:
    """`site_agent run`: train (from the group's base if `base`), push, then serve SiteAgent on `port`."""
    start = ("--init-from", group.base_name, *_replaced(site.train_args, group.finetune_args)) if base \
        else (*group.arch_args, *site.train_args)
    procs.start(site.site_id, ["-m", "site_agent", "run", "--site-id", site.site_id, "--data", site.data,
                               "--workspace", str(workspace), "--coordinator", address,
                               "--port", str(port), "--metrics-port", "0", "--heartbeat-s", "2", "--no-progress",
                               "--share-samples", str(max(samples, 0)), *start])


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
