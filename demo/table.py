"""The demo's results: one row per job (teacher vs transplanted metric, bytes delivered vs bytes of data)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from demo.sites import Group, SiteSpec, site_modules
from protos.nt.v1 import control_pb2, registry_pb2_grpc
from transplant.tasks import get_task

Jobs = list[tuple[Group, SiteSpec, str, str]]  # (group, teacher site, task, job id)


def results_table(jobs: Jobs, finished: dict[str, control_pb2.Job], registry: registry_pb2_grpc.ModuleRegistryStub,
                  workdir: Path) -> list[dict[str, Any]]:
    rows = []
    for group, site, task, job_id in jobs:
        job = finished[job_id]
        metrics = {m.name: m.value for m in job.metrics}
        primary = get_task(task).headline.name  # the figure every site reports (segmentation: pixel accuracy)
        info = json.loads((workdir / "sites" / site.site_id / "site.json").read_text())
        delivered = sum(m.size_bytes for m in site_modules(registry, site.site_id))  # modules + shared samples
        data_bytes = int(info.get("num_images", 0)) * group.image_bytes
        rows.append({
            "category": site.category, "task": task, "site": site.site_id, "generic": group.generic.site_id,
            "state": control_pb2.JobState.Name(job.state), "error": job.error or job.reason,
            "method": next((c.method for c in job.candidates if c.chosen), job.spec.method),
            "candidates": len(job.candidates),
            "metric": primary, "teacher": metrics.get(f"teacher_{primary}"), "transplanted": metrics.get(primary),
            "teacher_iou": metrics.get("teacher_iou"), "transplanted_iou": metrics.get("iou"),
            "bytes_delivered": delivered, "bytes_of_data": data_bytes, "job_id": job_id})
    return rows


def _reported(task: str) -> set[str]:
    return {m.name for m in get_task(task).metrics}


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = ("category", "task", "metric (%)", "teacher", "transplanted", "IoU t/s", "method (of N)",
              "MB delivered", "MB of data", "state")
    lines = [header]
    for r in rows:
        iou = f"{fmt(r['teacher_iou'])}/{fmt(r['transplanted_iou'])}" if "iou" in _reported(r["task"]) else ""
        lines.append((r["category"], r["task"], r["metric"], fmt(r["teacher"]), fmt(r["transplanted"]), iou,
                      f"{r['method']} ({r['candidates']})", f"{r['bytes_delivered'] / 1e6:.2f}", f"{r['bytes_of_data'] / 1e6:.2f}", r["state"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        if r["state"] != "SUCCEEDED":
            print(f"  {r['category']} x {r['task']}: {r['error']}")
