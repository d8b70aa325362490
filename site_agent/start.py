"""Where a site's teacher starts: a shared base the coordinator published (`train --init-from NAME`: its
architecture and weights; `--arch-from NAME`: its architecture only), or the architecture of a site whose
net this one wants to join (`--like-site SITE`), so the new site is compatible by construction.

Everything comes through the one checked registry client: each module's bytes against the sha256 the
registry lists, then against the module's own spec (names, shapes, float32, finite) before any use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from common.errors import RegistryError
from common.patterns import BASE_SITE, CATEGORY, PB_TO_ROLE, ROLE_TO_PB, TASK
from protos.nt.v1 import registry_pb2
from transplant.architectures import VGGConfig
from transplant.importing import vgg_config_of
from transplant.spec import ModuleSpec, SpecError, WeightsError, weights_from_bytes
from transplant.spec.schema import preprocess_of

from site_agent.client import RegistryClient
from site_agent.errors import SiteAgentError


@dataclass(frozen=True)
class Start:
    source: str                                   # "base:NAME" or "site:ID"
    config: VGGConfig
    weights: dict[str, torch.Tensor] | None       # TeacherNet parameter names; None: the architecture only
    refs: dict[str, str] = field(default_factory=dict)  # module id -> sha256 of what was read
    mean: list[float] | None = None               # the base's input normalisation (None: images in [0, 1])
    std: list[float] | None = None

    def record(self) -> dict[str, object]:
        """What site.json keeps about the start (training.start)."""
        return {"source": self.source, "weights": self.weights is not None, "modules": dict(self.refs)}


def _latest(modules: list[registry_pb2.ModuleInfo], role: str) -> list[registry_pb2.ModuleInfo]:
    """The newest module per (category, task) of a role: a re-pushed site's current modules."""
    newest: dict[tuple[str, str], registry_pb2.ModuleInfo] = {}
    for m in sorted(modules, key=lambda m: m.created):
        if PB_TO_ROLE.get(m.role) == role:
            newest[(m.category, m.task)] = m
    return list(newest.values())


def _modules(registry: RegistryClient, site_id: str, category: str) -> tuple[registry_pb2.ModuleInfo,
                                                                               list[registry_pb2.ModuleInfo]]:
    # by role: for another site's modules the registry answers with their specs only (architecture_only)
    listed = [m for role in (CATEGORY, TASK) for m in registry.list(site_id=site_id, category=category,
                                                                     role=ROLE_TO_PB[role])]
    what = f"base {category!r}" if site_id == BASE_SITE else f"site {site_id!r}"
    categories = _latest(listed, CATEGORY)
    if not categories:
        hint = "" if site_id != BASE_SITE else \
            " (bases: " + (", ".join(sorted({m.category for m in registry.list(site_id=BASE_SITE)})) or "none") + ")"
        raise SiteAgentError(f"the coordinator has no {what}{hint}")
    if len(categories) > 1:
        raise SiteAgentError(f"{what} holds several category modules ({', '.join(m.category for m in categories)}); "
                             "name a base instead")
    chosen = categories[0]
    return chosen, [m for m in _latest(listed, TASK) if m.category == chosen.category]


def _read(registry: RegistryClient, info: registry_pb2.ModuleInfo, spec: ModuleSpec) -> dict[str, torch.Tensor]:
    _, data = registry.download(info.module_id, info.sha256, info.size_bytes,
                                f"{PB_TO_ROLE.get(info.role, '')} module {info.module_id}")
    try:
        return weights_from_bytes(data, spec)
    except WeightsError as exc:
        raise SiteAgentError(f"module {info.module_id} does not match its spec: {exc}") from None


def fetch_start(registry: RegistryClient, base: str | None = None, like_site: str | None = None,
                weights: bool = True) -> Start:
    """The architecture (and, for a base with `weights`, the parameters) to start a teacher from."""
    site_id, category = (BASE_SITE, base) if base else (like_site or "", "")
    try:
        cat_info, task_infos = _modules(registry, site_id, category)
        specs = {"": ModuleSpec.loads(cat_info.spec_json)}
        specs.update({m.task: ModuleSpec.loads(m.spec_json) for m in task_infos})
        config = vgg_config_of(specs[""], {t: s for t, s in specs.items() if t})
    except SpecError as exc:
        raise SiteAgentError(f"cannot start from {'base ' + repr(base) if base else 'site ' + repr(like_site)}: "
                             f"{exc}") from None
    except RegistryError as exc:
        raise SiteAgentError(str(exc)) from None
    source = f"base:{base}" if base else f"site:{like_site}"
    refs = {m.module_id: m.sha256 for m in (cat_info, *task_infos)}
    prep = preprocess_of(specs[""])  # a base fed normalised images (an imported ImageNet VGG) is fine-tuned so
    channels = config.in_channels
    plain = prep["mean"] == [0.0] * channels and prep["std"] == [1.0] * channels
    mean, std = (None, None) if plain else (list(prep["mean"]), list(prep["std"]))
    if not (base and weights):
        return Start(source, config, None, refs, mean, std)
    state = {f"category.layers.{k}": v for k, v in _read(registry, cat_info, specs[""]).items()}
    for m in task_infos:
        state.update({f"tasks.{m.task}.layers.{k}": v for k, v in _read(registry, m, specs[m.task]).items()})
    return Start(source, config, state, refs, mean, std)


__all__ = ["Start", "fetch_start"]
