"""What `admin jobs`, `admin net`, `admin sites` and `admin modules` show: one dict per row (printed as JSON with --json)
and the table cells made from it, so the table and the JSON never disagree."""

from __future__ import annotations

import json
import time

from coordinator.convert import provenance_doc
from coordinator.job_states import state_name
from coordinator.promotion import primary_metric
from protos.nt.v1 import common_pb2, control_pb2, registry_pb2

AUTO = "auto"  # an empty method in a job spec means auto (transplant.methods.AUTO; no torch import here)


def _metrics(items) -> dict[str, float]:
    return {m.name: m.value for m in items}


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def job_doc(job: control_pb2.Job) -> dict:
    spec, metrics = job.spec, _metrics(job.metrics)
    metric = primary_metric(spec.task, metrics) if metrics else ""
    chosen = next((c.method for c in job.candidates if c.chosen), "")
    return {
        "job_id": job.job_id, "state": state_name(job.state), "category": spec.category, "task": spec.task,
        "method": spec.method or AUTO, "chosen_method": chosen, "samples": spec.samples,
        "layers": spec.adapter.layers or 1, "kernel": spec.adapter.kernel_size or 1, "reorder": spec.adapter.reorder,
        "steps": spec.steps, "teacher_site": spec.teacher_site_id, "generic_site": spec.generic_site_id,
        "max_gap": spec.max_gap if spec.HasField("max_gap") else None,
        "metric": metric, "value": metrics.get(metric), "teacher_value": metrics.get(f"teacher_{metric}"),
        "net_version": job.net_version, "reason": job.reason, "error": job.error, "promoted": job.promoted,
        "attempts": job.attempts, "created": job.created, "finished": job.finished,
        "candidates": [{"method": c.method, "metrics": _metrics(c.metrics), "steps": c.steps, "seconds": c.seconds,
                        "error": c.error, "chosen": c.chosen, "adapter_id": c.adapter_ref.module_id}
                       for c in job.candidates],
    }


JOB_HEADER = ("JOB", "STATE", "CATEGORY", "TASK", "METHOD", "SAMPLES", "LAYERS", "KERNEL", "METRIC", "VALUE",
              "TEACHER", "NET", "CREATED", "REASON / ERROR")


def job_cells(doc: dict) -> tuple[str, ...]:
    method = f"{doc['method']}:{doc['chosen_method']}" if doc["method"] == AUTO and doc["chosen_method"] else doc["method"]
    net = f"v{doc['net_version']}" + (" (forced)" if doc["promoted"] else "") if doc["net_version"] else "-"
    return (doc["job_id"], doc["state"], doc["category"], doc["task"], method, str(doc["samples"]),
            str(doc["layers"]), str(doc["kernel"]), doc["metric"] or "-", _figure(doc["value"]),
            _figure(doc["teacher_value"]), net, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["created"])),
            doc["error"] or doc["reason"] or "")


def candidate_lines(doc: dict) -> list[str]:
    """One line per candidate of an auto job, for `admin watch` and the end of `admin submit --watch`."""
    lines = []
    for c in doc["candidates"]:
        figures = ", ".join(f"{k}={v:.2f}" for k, v in sorted(c["metrics"].items())) or c["error"] or "-"
        lines.append(f"  {'*' if c['chosen'] else ' '} {c['method']:<14} {figures}")
    return lines


def net_doc(net: control_pb2.GetNetReply) -> dict:
    return {"name": net.name, "version": net.version, "created": net.created, "note": net.note,
            "routes": [route_doc(e) for e in net.entries]}


def route_doc(entry: control_pb2.NetEntry) -> dict:
    return {"category": entry.category, "task": entry.task, "adapter_id": entry.adapter_id,
            "category_module_id": entry.category_module_id, "task_module_id": entry.task_module_id,
            "quality": _metrics(entry.quality), "teacher_quality": _metrics(entry.teacher_quality),
            "forced": entry.forced, "provenance": provenance_doc(entry.provenance)}


NET_HEADER = ("CATEGORY", "TASK", "METHOD", "SAMPLES", "LAYERS", "KERNEL", "STEPS", "METRIC", "VALUE", "TEACHER",
              "JOB")


def route_cells(doc: dict) -> tuple[str, ...]:
    p = doc["provenance"]
    method = p["method"] + (" (forced)" if doc["forced"] else "")
    native = p["method"] == "native"
    return (doc["category"], doc["task"], method, "-" if native else str(p["samples"]),
            "-" if native else str(p["adapter"]["layers"]), "-" if native else str(p["adapter"]["kernel"]),
            "-" if native else str(p["steps"]), p["metric"] or "-", _figure(p["value"]), _figure(p["teacher_value"]),
            p["job_id"] or "-")


def site_doc(site: control_pb2.SiteInfo, modules: list[dict] | None = None) -> dict:
    """A site, with the input and channels of its category modules (what a joining net must match)."""
    own = [m for m in modules or [] if m["site_id"] == site.site_id and m["role"] == "category"]
    return {"site_id": site.site_id, "endpoint": site.endpoint, "last_seen": site.last_seen,
            "categories": list(site.categories), "tasks": list(site.tasks), "shared_samples": site.shared_samples,
            "inputs": sorted({_shape(m["input_shape"]) for m in own}),
            "channels": sorted({m["out_channels"] for m in own if m["out_channels"]})}


SITE_HEADER = ("SITE", "ENDPOINT", "LAST SEEN", "CATEGORIES", "TASKS", "INPUT", "CHANNELS OUT", "SHARED SAMPLES")


def site_cells(doc: dict) -> tuple[str, ...]:
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["last_seen"])) if doc["last_seen"] else "never"
    return (doc["site_id"], doc["endpoint"] or "-", seen, ",".join(doc["categories"]) or "-",
            ",".join(doc["tasks"]) or "-", ",".join(doc["inputs"]) or "-",
            ",".join(map(str, doc["channels"])) or "-", str(doc["shared_samples"]))


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape)) or "-"


def _spec_summary(spec_json: str) -> tuple[list[int], int, str]:
    """(input [C, H, W], channels of the last conv (what the module hands on, for a category module), family)
    read off the spec's JSON without building anything; the registry validated the spec on upload."""
    try:
        doc = json.loads(spec_json) if spec_json else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        return [], 0, ""
    convs = [n.get("attrs", {}).get("out_channels", 0) for n in doc.get("nodes", [])
             if isinstance(n, dict) and n.get("op") in ("conv2d", "conv_transpose2d")]
    family = doc.get("metadata", {}).get("family", "") if isinstance(doc.get("metadata"), dict) else ""
    return list(doc.get("input_shape", [])), int(convs[-1]) if convs else 0, str(family)


def module_doc(info: registry_pb2.ModuleInfo) -> dict:
    input_shape, channels, family = _spec_summary(info.spec_json)
    return {"module_id": info.module_id, "site_id": info.site_id, "category": info.category,
            "role": common_pb2.ModuleRole.Name(info.role).lower(), "task": info.task, "input_shape": input_shape,
            "out_channels": channels, "family": family or info.metadata.get("family", ""), "sha256": info.sha256,
            "size_bytes": info.size_bytes, "created": info.created}


MODULE_HEADER = ("SITE", "CATEGORY", "ROLE", "TASK", "INPUT", "CHANNELS OUT", "FAMILY", "SIZE", "SHA256", "MODULE")


def module_cells(doc: dict) -> tuple[str, ...]:
    return (doc["site_id"], doc["category"], doc["role"], doc["task"] or "-", _shape(doc["input_shape"]),
            str(doc["out_channels"] or "-"), doc["family"] or "-", str(doc["size_bytes"]), doc["sha256"],
            doc["module_id"])
