"""`admin base publish --name NAME --from DIR`: a shared base net that sites start from (`site_agent train
--init-from NAME`), as the paper's VOC nets all started from one ImageNet VGG-16.

DIR is a site workspace (`site_agent train` or `import` wrote it): `category/` and `tasks/<task>/`, each a
`module.json` + `module.safetensors` folder as `transplant.spec.save_module` writes it, and `site.json`.
Every module is uploaded through the ModuleRegistry like any site's, and validated there the same way,
owned by the reserved site `common.patterns.BASE_SITE` under the category NAME.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from common.patterns import BASE_SITE, CATEGORY, ROLE_TO_PB, TASK, is_name
from common.registry_client import upload
from protos.nt.v1 import registry_pb2, registry_pb2_grpc

SPEC_FILE, WEIGHTS_FILE, SITE_FILE = "module.json", "module.safetensors", "site.json"


class BaseError(ValueError):
    """A base directory that cannot be published; printed as one line."""


@dataclass(frozen=True)
class BaseModule:
    role: str
    task: str
    spec_json: str
    data: bytes


def read_base(directory: Path) -> tuple[list[BaseModule], dict]:
    """(modules, site.json) of a workspace directory, category module first."""
    if not (directory / "category" / SPEC_FILE).is_file():
        raise BaseError(f"{directory} holds no category/{SPEC_FILE}: give a site workspace (site_agent train/import)")
    try:
        site = json.loads((directory / SITE_FILE).read_text()) if (directory / SITE_FILE).is_file() else {}
    except json.JSONDecodeError as exc:
        raise BaseError(f"{directory / SITE_FILE} is not valid JSON: {exc}") from None
    folders = [(CATEGORY, "", directory / "category")]
    tasks = directory / "tasks"
    folders += [(TASK, p.name, p) for p in sorted(tasks.iterdir()) if p.is_dir()] if tasks.is_dir() else []
    modules = []
    for role, task, folder in folders:
        try:
            modules.append(BaseModule(role, task, (folder / SPEC_FILE).read_text(), (folder / WEIGHTS_FILE).read_bytes()))
        except (OSError, UnicodeDecodeError) as exc:
            raise BaseError(f"cannot read the module in {folder}: {exc}") from None
    return modules, site if isinstance(site, dict) else {}


def _header(name: str, module: BaseModule, site: dict) -> registry_pb2.UploadHeader:
    header = registry_pb2.UploadHeader(
        site_id=BASE_SITE, category=name, role=ROLE_TO_PB[module.role], task=module.task, spec_json=module.spec_json,
        sha256=hashlib.sha256(module.data).hexdigest(), size_bytes=len(module.data),
        metadata={"kind": module.role, "base": name, "from_site": str(site.get("site_id", ""))[:64],
                  "family": str(site.get("architecture", {}).get("name", ""))[:64]})
    if module.role == CATEGORY:
        header.stats.feature_norm_mean = float(site.get("feature_norm_mean", 0.0) or 0.0)
        header.stats.num_images = int(site.get("num_images", 0) or 0)
    for metric, value in site.get("teacher_metrics", {}).get(module.task, {}).items() if module.task else ():
        header.metadata[f"teacher_{metric}"] = f"{float(value):.6g}"
    return header


def publish_base(registry: registry_pb2_grpc.ModuleRegistryStub, name: str, directory: Path,
                 timeout: float) -> list[tuple[str, registry_pb2.UploadReply]]:
    """Upload every module of DIR as base NAME; [(role or task, reply)]. The registry validates each."""
    if not is_name(name):
        raise BaseError(f"invalid base name {name!r}")
    modules, site = read_base(directory)
    return [(m.task or m.role, upload(registry, _header(name, m, site), m.data, timeout=timeout)) for m in modules]


__all__ = ["BaseError", "publish_base", "read_base"]
