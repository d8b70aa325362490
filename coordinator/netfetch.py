"""Builds a runnable TransplantNet from a GetNet reply, fetching and validating every module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from coordinator.convert import provenance_doc
from protos.nt.v1 import control_pb2, registry_pb2
from transplant.adapter import adapter_from_bytes
from transplant.net import TransplantNet
from transplant.spec import ModuleSpec, build_module, weights_from_bytes

Fetch = Callable[[str], tuple[registry_pb2.ModuleInfo, bytes | bytearray]]  # module id -> (info, weights)


def _module(fetch: Fetch, module_id: str):
    info, data = fetch(module_id)
    spec = ModuleSpec.loads(info.spec_json)  # validated like an upload: spec, then every tensor
    return build_module(spec, weights_from_bytes(data, spec))


def build_net(net: control_pb2.GetNetReply, fetch: Fetch) -> TransplantNet:
    categories = {e.category: e.category_module_id for e in net.entries}
    tasks = {e.task: e.task_module_id for e in net.entries}
    native = {e.task: e.category for e in net.entries if not e.adapter_id}
    result = TransplantNet()
    for name, module_id in sorted(categories.items()):
        result.add_category(name, _module(fetch, module_id))
    for name, module_id in sorted(tasks.items()):
        result.add_task(name, _module(fetch, module_id), native_category=native.get(name))
    for entry in net.entries:
        if entry.adapter_id:
            info, data = fetch(entry.adapter_id)
            result.add_adapter(entry.category, entry.task, adapter_from_bytes(info.spec_json, data))
    return result


def save_net(net: control_pb2.GetNetReply, transplant_net: TransplantNet, directory: Path) -> Path:
    """TransplantNet.save, then each route of net.json gains its `provenance` and the file names the
    net version it is (TransplantNet.load reads the routing keys only, so the file stays loadable)."""
    path = transplant_net.save(directory)
    doc = json.loads((path / "net.json").read_text())
    provenance = {(e.category, e.task): provenance_doc(e.provenance) for e in net.entries}
    for route in doc["routes"]:
        route["provenance"] = provenance[(route["category"], route["task"])]
    doc["net"] = {"name": net.name, "version": net.version, "created": net.created, "note": net.note}
    (path / "net.json").write_text(json.dumps(doc, indent=2))
    return path
