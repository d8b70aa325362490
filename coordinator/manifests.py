"""Typed manifests on top of any Store (the registry's records and the nets' versions; the storage
backends under coordinator/store/ know only blobs and JSON documents).

    modules/<site_id>/<module_id>.json   one ModuleRecord per stored module
    nets/<name>/v000003.json             immutable transplant-net versions
    nets/<name>/LATEST.json              copy of the newest committed version

A net version becomes current only when LATEST.json is rewritten, which happens last:
a crash after writing v000004.json leaves v000003 current, and the orphan is simply
overwritten by the next commit of version 4. One writer (the coordinator) commits nets.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace

from common.patterns import MODULE_ROLES
from coordinator.store.base import Store, StoreError, check_key

_VERSION_KEY = re.compile(r"/v(\d{6,})\.json$")


class NetConflictError(StoreError):
    """A net commit was based on a version that is no longer the latest."""


@dataclass
class ModuleRecord:
    module_id: str
    site_id: str
    category: str
    role: str  # one of MODULE_ROLES
    task: str  # empty for category modules
    spec_json: str  # declarative architecture spec, kept as the exact string uploaded
    sha256: str  # weights blob in the store
    size_bytes: int
    feature_norm_mean: float = 0.0  # E||f(I)||_F over the site's images (category modules)
    num_images: int = 0
    metadata: dict[str, str] = field(default_factory=dict)  # small free-form notes from the uploader
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.role not in MODULE_ROLES:
            raise ValueError(f"role must be one of {MODULE_ROLES}, got {self.role!r}")

    @property
    def key(self) -> str:
        return module_record_key(self.site_id, self.module_id)


def module_id(site_id: str, role: str, category: str, task: str, spec_json: str, sha256: str,
              feature_norm_mean: float = 0.0, num_images: int = 0) -> str:
    """The one id scheme of every module (uploads and adapters alike).

    Stable across identical re-uploads; a change in the spec, the weights or the statistics gives
    another id, so a stored record is never replaced by a different one under the same id.
    """
    names = category if role == "category" else f"{category}-{task}" if task else category
    content = json.dumps({"spec": spec_json, "sha256": sha256, "feature_norm_mean": float(feature_norm_mean),
                          "num_images": int(num_images)}, sort_keys=True)
    return f"{site_id}-{role}-{names}-{hashlib.sha256(content.encode()).hexdigest()[:16]}"


def module_record_key(site_id: str, module_id: str) -> str:
    return check_key(f"modules/{site_id}/{module_id}.json")


def save_module_record(store: Store, record: ModuleRecord) -> None:
    store.put_json(record.key, asdict(record))


def load_module_record(
    store: Store, module_id: str, site_id: str | None = None
) -> ModuleRecord | None:
    """Without site_id, searches every site (module ids are unique across sites)."""
    if site_id is not None:
        doc = store.get_json(module_record_key(site_id, module_id))
        return None if doc is None else _record_from_doc(doc)
    suffix = f"/{module_id}.json"
    for key in store.list_keys("modules/"):
        if key.endswith(suffix) and (doc := store.get_json(key)) is not None:
            return _record_from_doc(doc)
    return None


def list_module_records(
    store: Store, site_id: str | None = None, role: str | None = None
) -> list[ModuleRecord]:
    prefix = "modules/" if site_id is None else f"modules/{site_id}/"
    docs = (store.get_json(key) for key in store.list_keys(prefix))
    records = [_record_from_doc(doc) for doc in docs if doc is not None]  # None: deleted meanwhile
    return [r for r in records if role is None or r.role == role]


def delete_module_record(store: Store, site_id: str, module_id: str) -> None:
    store.delete_json(module_record_key(site_id, module_id))


def _record_from_doc(doc: dict) -> ModuleRecord:
    known = {f.name for f in fields(ModuleRecord)}  # tolerate fields added by newer writers
    return ModuleRecord(**{k: v for k, v in doc.items() if k in known})


@dataclass
class AdapterEntry:
    """One learnt adapter joining a category module to a task module."""

    category: str
    task: str
    adapter_id: str
    adapter_sha256: str
    config: dict = field(default_factory=dict)  # layers, kernel_size, reorder, ...
    method: str = "back_distill"
    samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    job_id: str = ""
    # where the route came from and how good it is: job_id, method, samples, adapter{layers, kernel,
    # reorder}, steps, metric, value, teacher_value, sites, sha256{role: digest}, created
    provenance: dict = field(default_factory=dict)
    forced: bool = False  # put in by an admin (`admin promote`), not by the gate


@dataclass
class NetManifest:
    """One version of a transplant net: category modules x adapters x task modules."""

    name: str
    version: int = 1
    category_modules: dict[str, str] = field(default_factory=dict)  # category -> module_id
    task_modules: dict[str, str] = field(default_factory=dict)  # task -> module_id
    adapters: list[AdapterEntry] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    note: str = ""  # how this version came to be: a job, a forced promotion, a rollback

    def next_version(self) -> NetManifest:
        """Deep copy to edit and commit as the following version."""
        return replace(copy.deepcopy(self), version=self.version + 1, created=time.time())

    def adapter_for(self, category: str, task: str) -> AdapterEntry | None:
        return next((a for a in self.adapters if (a.category, a.task) == (category, task)), None)

    def set_adapter(self, entry: AdapterEntry) -> None:
        """Adds entry, replacing any adapter for the same category x task pair."""
        pair = (entry.category, entry.task)
        self.adapters = [a for a in self.adapters if (a.category, a.task) != pair]
        self.adapters.append(entry)

    def to_doc(self) -> dict:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict) -> NetManifest:
        known = {f.name for f in fields(AdapterEntry)}  # tolerate fields added by newer writers
        adapters = [
            AdapterEntry(**{k: v for k, v in a.items() if k in known})
            for a in doc.get("adapters", [])
        ]
        return cls(
            name=doc["name"],
            version=int(doc["version"]),
            category_modules=dict(doc.get("category_modules", {})),
            task_modules=dict(doc.get("task_modules", {})),
            adapters=adapters,
            created=float(doc.get("created", 0.0)),
            note=str(doc.get("note", "")),
        )


def net_version_key(name: str, version: int) -> str:
    return check_key(f"nets/{name}/v{version:06d}.json")


def net_latest_key(name: str) -> str:
    return check_key(f"nets/{name}/LATEST.json")


def load_latest_net(store: Store, name: str) -> NetManifest | None:
    doc = store.get_json(net_latest_key(name))
    return None if doc is None else NetManifest.from_doc(doc)


def load_net(store: Store, name: str, version: int) -> NetManifest | None:
    """A committed version; uncommitted orphans (newer than LATEST) read as None."""
    latest = load_latest_net(store, name)
    if latest is None or version > latest.version:
        return None
    doc = store.get_json(net_version_key(name, version))
    return None if doc is None else NetManifest.from_doc(doc)


def commit_net(store: Store, manifest: NetManifest) -> None:
    """Publishes manifest as the latest version; it must be exactly latest + 1."""
    latest = load_latest_net(store, manifest.name)
    expected = (latest.version if latest else 0) + 1
    if manifest.version != expected:
        raise NetConflictError(
            f"net {manifest.name!r}: cannot commit version {manifest.version}, "
            f"the next version is {expected} (reload the latest and reapply the change)"
        )
    doc = manifest.to_doc()
    store.put_json(net_version_key(manifest.name, manifest.version), doc)
    store.put_json(net_latest_key(manifest.name), doc)  # last: the commit point


def list_nets(store: Store) -> list[str]:
    """Names of the nets with at least one committed version."""
    return sorted({key.split("/")[1] for key in store.list_keys("nets/") if key.endswith("/LATEST.json")})


def list_net_versions(store: Store, name: str) -> list[int]:
    """Committed versions, oldest first."""
    latest = load_latest_net(store, name)
    if latest is None:
        return []
    keys = store.list_keys(f"nets/{name}/v")
    versions = (int(m.group(1)) for key in keys if (m := _VERSION_KEY.search(key)))
    return sorted(v for v in versions if v <= latest.version)
