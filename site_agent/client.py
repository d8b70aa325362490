"""The site's registry client: common's RegistryClient plus pushing this site's workspace.

Everything on the wire (chunks, retries, checked downloads, errors) is common.registry_client's;
this module only turns workspace files into upload headers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from common import registry_client
from common.patterns import CATEGORY, ROLE_TO_PB, TASK
from protos.nt.v1 import registry_pb2

from site_agent.workspace import ModuleFile, SiteInfo, load_info, module_files, save_pushed


def header_for(module: ModuleFile, info: SiteInfo) -> registry_pb2.UploadHeader:
    """Header of one upload; what has no proto field (kind, metrics, sample counts) goes in metadata."""
    metadata = {"kind": module.role, "dataset": info.data.partition(":")[0], "family": info.architecture["name"],
                "image_size": str(info.size), "torch": torch.__version__.split("+")[0]}
    header = registry_pb2.UploadHeader(
        site_id=info.site_id, category=info.category, role=ROLE_TO_PB[module.role], task=module.task,
        spec_json=module.spec_json, sha256=module.sha256, size_bytes=len(module.data), metadata=metadata)
    if module.role == CATEGORY:
        header.stats.feature_norm_mean = info.feature_norm_mean
        header.stats.num_images = info.num_images
    elif module.role == TASK:
        for name, value in info.teacher_metrics.get(module.task, {}).items():
            header.metadata[f"teacher_{name}"] = f"{value:.6g}"
    else:  # a samples set is no module: its description travels as metadata, the spec stays empty
        header.spec_json = ""
        header.metadata.update({k: str(v) for k, v in json.loads(module.spec_json).items() if k != "format"})
        header.metadata["num_samples"] = str(info.shared_samples)
    return header


class RegistryClient(registry_client.RegistryClient):
    def push_workspace(self, workspace: Path | str, progress: bool = True) -> dict[str, dict[str, str]]:
        """Upload category + task modules (+ shared samples); returns name -> {module_id, sha256}."""
        info = load_info(workspace)
        ids = {}
        for module in module_files(workspace):
            reply = self.upload(header_for(module, info), module.data, module.name, progress)
            ids[module.name] = {"module_id": reply.module_id, "sha256": module.sha256}
        save_pushed(workspace, ids)
        return ids


__all__ = ["RegistryClient", "header_for"]
