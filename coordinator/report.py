"""A built-in report for people without Grafana: PNG plots and a one-page HTML summary of the net.

`python -m coordinator.admin report DIR` writes DIR/index.html, quality_matrix.png,
quality_vs_samples.png and loss_curves.png, all from the Control API.
"""
from __future__ import annotations

import html
import math
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from protos.nt.v1 import control_pb2, control_pb2_grpc  # noqa: E402

PRIMARY = {"classification": ("error_rate", "error rate (%)", "lower is better"),
           "segmentation": ("pixel_accuracy", "pixel accuracy (%)", "higher is better")}


def _metrics(items) -> dict[str, float]:
    return {m.name: m.value for m in items}


def quality_matrix(entries, path: Path) -> Path:
    """Category x task heat map of the site-evaluated metric, teacher's value beside it."""
    categories = sorted({e.category for e in entries})
    tasks = sorted({e.task for e in entries})
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.5 * max(len(tasks), 1), 1.2 + 0.5 * len(categories)),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric, label, _ = PRIMARY.get(task, ("error_rate", "error rate (%)", ""))
        cmap = "RdYlGn_r" if metric == "error_rate" else "RdYlGn"
        values = [[math.nan] for _ in categories]
        for entry in entries:
            if entry.task == task:
                values[categories.index(entry.category)][0] = _metrics(entry.quality).get(metric, math.nan)
        ax.imshow(values, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_yticks(range(len(categories)), categories)
        ax.set_xticks([0], [label])
        ax.set_title(task)
        for entry in (e for e in entries if e.task == task):
            row = categories.index(entry.category)
            value = _metrics(entry.quality).get(metric)
            teacher = _metrics(entry.teacher_quality).get(metric)
            text = ("native (generic module)" if not entry.adapter_id else "-") if value is None else f"{value:.1f}"
            if teacher is not None:
                text += f" (teacher {teacher:.1f})"
            ax.text(0, row, text, ha="center", va="center", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quality_vs_samples(jobs, path: Path) -> Path:
    """Per task: every evaluated candidate's metric against its number of labelled samples, one line per
    (category, method): lines never join different categories."""
    by_task: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        metric = PRIMARY.get(job.spec.task, ("error_rate",))[0]
        for candidate in job.candidates:
            value = _metrics(candidate.metrics).get(metric)
            if value is not None:
                by_task[job.spec.task][f"{job.spec.category} · {candidate.method}"].append((job.spec.samples, value))
    tasks = sorted(by_task) or ["classification"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method, points in sorted(by_task[task].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=method)
        _, label, hint = PRIMARY.get(task, ("", "metric", ""))
        ax.set_xlabel("labelled samples")
        ax.set_ylabel(f"{label}, {hint}")
        ax.set_title(task)
        if by_task[task]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(histories: dict[str, tuple[str, list]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for job_id, (label, events) in histories.items():
        if events:
            ax.plot([e.step for e in events], [max(e.loss, 1e-12) for e in events], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss of transplant jobs" if histories else "no iterative jobs (one-shot solves only)")
    if histories:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _row(cells) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def summary_html(net: control_pb2.GetNetReply, jobs, images: list[str]) -> str:
    rows = []
    for e in sorted(net.entries, key=lambda e: (e.category, e.task)):
        metric = PRIMARY.get(e.task, ("error_rate",))[0]
        value, teacher = _metrics(e.quality).get(metric), _metrics(e.teacher_quality).get(metric)
        gap = "" if value is None or teacher is None else f"{value - teacher:+.1f}"
        rows.append(_row([e.category, e.task, e.method or "native", e.samples, metric,
                          "" if value is None else f"{value:.2f}", "" if teacher is None else f"{teacher:.2f}", gap]))
    states = Counter(control_pb2.JobState.Name(j.state) for j in jobs)
    failures = [_row([j.job_id, j.spec.category, j.spec.task, j.error]) for j in jobs if j.state == control_pb2.FAILED]
    failures += [_row([j.job_id, j.spec.category, j.spec.task, "REJECTED: " + j.reason]) for j in jobs
                 if j.state == control_pb2.REJECTED]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Transplant net {html.escape(net.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse}}img{{max-width:100%;margin:1em 0}}</style></head><body>
<h1>Transplant net "{html.escape(net.name or 'default')}", version {net.version}</h1>
<p>{len(net.entries)} category x task pairs. Jobs: {", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"}.
Quality is evaluated by each category's own site on its held-out data; the teacher column is that site's own
net on the same data.</p>
<table><tr><th>category</th><th>task</th><th>method</th><th>samples</th><th>metric</th><th>adapter</th>
<th>teacher</th><th>adapter - teacher</th></tr>{"".join(rows)}</table>
{"<h2>Failed and rejected jobs</h2><table><tr><th>job</th><th>category</th><th>task</th><th>reason</th></tr>" + "".join(failures) + "</table>" if failures else ""}
{"".join(f'<img src="{name}" alt="{name}">' for name in images)}
</body></html>"""


def write_report(control: control_pb2_grpc.ControlStub, directory: Path, timeout: float = 30.0,
                 name: str = "") -> Path:
    """The report of one net (default: the last committed) and the jobs that built it."""
    directory.mkdir(parents=True, exist_ok=True)
    net = control.GetNet(control_pb2.GetNetRequest(name=name), timeout=timeout)
    jobs = [job for job in control.ListJobs(control_pb2.ListJobsRequest(), timeout=timeout).jobs
            if (job.spec.net or job.spec.generic_site_id) == net.name]
    histories = {}
    for job in jobs:
        history = control.GetJobHistory(control_pb2.GetJobRequest(job_id=job.job_id), timeout=timeout)
        by_method: dict[str, list] = defaultdict(list)
        for event in history.events:  # an auto job trains several candidates: one curve each
            by_method[event.method or job.spec.method].append(event)
        for method, events in by_method.items():
            histories[f"{job.job_id}/{method}"] = (f"{job.spec.category} x {job.spec.task} ({method}, "
                                                   f"{job.spec.samples} samples)", events)
    images = [quality_matrix(list(net.entries), directory / "quality_matrix.png").name,
              quality_vs_samples(jobs, directory / "quality_vs_samples.png").name,
              loss_curves(histories, directory / "loss_curves.png").name]
    (directory / "index.html").write_text(summary_html(net, jobs, images))
    return directory
