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

from coordinator.promotion import TEACHER_PREFIX, gap, max_gap_for, primary_metric  # noqa: E402
from protos.nt.v1 import control_pb2, control_pb2_grpc  # noqa: E402

LABELS = {"error_rate": ("error rate (%)", "lower is better"), "iou": ("object IoU (%)", "higher is better"),
          "pixel_accuracy": ("pixel accuracy (%)", "higher is better")}
GAP_CMAP = "RdYlGn_r"  # 0 points behind the teacher: green; at the gate and beyond: red


def _metrics(items) -> dict[str, float]:
    return {m.name: m.value for m in items}


def _label(metric: str) -> str:
    name, hint = LABELS.get(metric, (metric, ""))
    return f"{name}, {hint}" if hint else name


def route_figures(entry) -> tuple[str, float | None, float | None, float | None]:
    """(primary metric, value, teacher value, points behind the teacher) of one net entry."""
    quality, teacher = _metrics(entry.quality), _metrics(entry.teacher_quality)
    metric = primary_metric(entry.task, quality or teacher)
    value, reference = quality.get(metric), teacher.get(metric)
    behind = None if value is None or reference is None else gap(metric, value, reference)
    return metric, value, reference, behind


def gate_for(task: str, gates: dict[str, float] | None = None) -> float:
    return max_gap_for(task, None, gates or {})


def gap_colour(behind: float | None, gate: float, tint: float = 0.45) -> str:
    """Hex colour of a gap on the colour map the PNG uses (grey: no figure), mixed with `tint` white so
    that black text on it stays readable in the HTML tables."""
    if behind is None:
        return "#dddddd"
    r, g, b = plt.get_cmap(GAP_CMAP)(min(max(behind, 0.0), gate) / gate)[:3]
    return matplotlib.colors.to_hex((r * (1 - tint) + tint, g * (1 - tint) + tint, b * (1 - tint) + tint))


def quality_matrix(entries, path: Path, gates: dict[str, float] | None = None) -> Path:
    """Category x task map of every route, coloured by its gap to its teacher on a visible scale
    (0 .. the task's gate), each cell naming the figure, the teacher's and the gap."""
    categories = sorted({e.category for e in entries}) or ["-"]
    tasks = sorted({e.task for e in entries}) or ["-"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.8 * len(tasks), 1.6 + 0.55 * len(categories)),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        gate = gate_for(task, gates)
        values = [[math.nan] for _ in categories]
        shown = set()
        for entry in (e for e in entries if e.task == task):
            metric, value, teacher, behind = route_figures(entry)
            shown.add(metric)
            row = categories.index(entry.category)
            values[row][0] = math.nan if behind is None else min(max(behind, 0.0), gate)
            kind = "native" if not entry.adapter_id else entry.method
            text = f"{kind}: no figures" if value is None else f"{kind}: {value:.1f} (teacher {teacher:.1f})"
            text += "" if behind is None or not entry.adapter_id else f"\n{behind:+.1f} points"
            ax.text(0, row, text, ha="center", va="center", fontsize=8)
        image = ax.imshow(values, cmap=GAP_CMAP, vmin=0, vmax=gate, aspect="auto")
        ax.set_yticks(range(len(categories)), categories)
        ax.set_xticks([0], [" / ".join(_label(m) for m in sorted(shown))])
        ax.set_title(task)
        bar = fig.colorbar(image, ax=ax, fraction=0.08)
        bar.set_label(f"points behind the teacher (gate {gate:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quality_vs_samples(jobs, path: Path) -> Path:
    """Per task (small multiples): every evaluated candidate's primary figure against its number of
    labelled samples, one line per (category, method): lines never join different categories."""
    by_task: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    metrics: dict[str, str] = {}
    for job in jobs:
        for candidate in job.candidates:
            figures = _metrics(candidate.metrics)
            metric = metrics.setdefault(job.spec.task, primary_metric(job.spec.task, figures))
            if metric in figures:
                by_task[job.spec.task][f"{job.spec.category} · {candidate.method}"].append(
                    (job.spec.samples, figures[metric]))
    tasks = sorted(by_task) or ["classification"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for line, points in sorted(by_task[task].items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=line)
        ax.set_xlabel("labelled samples")
        ax.set_ylabel(_label(metrics.get(task, primary_metric(task, {}))))
        ax.set_title(task)
        if by_task[task]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def normalised_losses(events) -> list[float]:
    """A job's losses over its first one (floored: a loss of exactly 0 stays drawable on a log axis)."""
    losses = [max(e.loss, 1e-12) for e in events]
    return [v / losses[0] for v in losses]


def loss_curves(histories: dict[str, tuple[str, list]], path: Path) -> Path:
    """One curve per (job, method), each divided by its own first loss: losses of different jobs have
    different scales (feature norms, tasks), their shapes compare."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for job_id, (label, events) in histories.items():
        if events:
            ax.plot([e.step for e in events], normalised_losses(events), label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss / the job's first loss")
    ax.set_title("training loss of transplant jobs, normalised per job" if histories
                 else "no iterative jobs (one-shot solves only)")
    if histories:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _row(cells, colour: str = "") -> str:
    style = f' style="background:{colour}"' if colour else ""
    return f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


def _number(value: float | None, sign: bool = False) -> str:
    return "" if value is None else f"{value:+.1f}" if sign else f"{value:.2f}"


def gap_scale_html(gate: float) -> str:
    """The colour scale of the route table, drawn from the same colour map as the PNG."""
    stops = ", ".join(gap_colour(gate * i / 10, gate) for i in range(11))
    return (f'<div class="scale"><span>0 points behind the teacher</span><div class="bar" '
            f'style="background:linear-gradient(to right, {stops})"></div><span>{gate:g} (the gate) or more</span>'
            f'</div>')


def candidate_rows(jobs) -> list[str]:
    """Every evaluated candidate that is not in the net: beaten by another, or its job was rejected."""
    rows = []
    for job in jobs:
        chosen = [c.method for c in job.candidates if c.chosen]
        for c in job.candidates:
            if c.chosen and job.state != control_pb2.REJECTED:
                continue
            figures = _metrics(c.metrics)
            metric = primary_metric(job.spec.task, figures)
            value, teacher = figures.get(metric), figures.get(f"{TEACHER_PREFIX}{metric}")
            behind = None if value is None or teacher is None else gap(metric, value, teacher)
            why = (c.error or ("job REJECTED: " + job.reason if job.state == control_pb2.REJECTED
                               else f"beaten by {', '.join(chosen) or 'another candidate'}"))
            rows.append(_row([job.job_id, job.spec.category, job.spec.task, c.method, metric, _number(value),
                              _number(teacher), _number(behind, sign=True), why],
                             gap_colour(behind, gate_for(job.spec.task))))
    return rows


def summary_html(net: control_pb2.GetNetReply, jobs, images: list[str], gates: dict[str, float] | None = None) -> str:
    rows = []
    for e in sorted(net.entries, key=lambda e: (e.category, e.task)):
        metric, value, teacher, behind = route_figures(e)
        rows.append(_row([e.category, e.task, e.method or "native", e.samples, metric, _number(value),
                          _number(teacher), "" if not e.adapter_id else _number(behind, sign=True)],
                         gap_colour(behind, gate_for(e.task, gates))))
    states = Counter(control_pb2.JobState.Name(j.state) for j in jobs)
    failures = [_row([j.job_id, j.spec.category, j.spec.task, j.error]) for j in jobs if j.state == control_pb2.FAILED]
    candidates = candidate_rows(jobs)
    tasks = sorted({e.task for e in net.entries})
    scales = "".join(f"<p>{html.escape(t)}: {gap_scale_html(gate_for(t, gates))}</p>" for t in tasks)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Transplant net {html.escape(net.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse}}img{{max-width:100%;margin:1em 0}}.scale{{display:inline-flex;align-items:center;gap:8px}}
.bar{{width:260px;height:14px;border:1px solid #999}}</style></head><body>
<h1>Transplant net "{html.escape(net.name or 'default')}", version {net.version}</h1>
<p>{len(net.entries)} category x task routes. Jobs: {", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"}.
Quality is evaluated by each category's own site on its held-out data; the teacher column is that site's own
net on the same data. Native routes (a task module on its own category) show the owning site's own figures.
Each row is coloured by how far the route trails its teacher:</p>
{scales}
<table><tr><th>category</th><th>task</th><th>method</th><th>samples</th><th>metric</th><th>route</th>
<th>teacher</th><th>points behind</th></tr>{"".join(rows)}</table>
{"<h2>Candidates not in the net</h2><table><tr><th>job</th><th>category</th><th>task</th><th>method</th><th>metric</th><th>value</th><th>teacher</th><th>points behind</th><th>why not</th></tr>" + "".join(candidates) + "</table>" if candidates else ""}
{"<h2>Failed jobs</h2><table><tr><th>job</th><th>category</th><th>task</th><th>reason</th></tr>" + "".join(failures) + "</table>" if failures else ""}
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
