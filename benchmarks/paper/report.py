"""Aggregate rows (mean, std over seeds), write the markdown report and the plots."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.paper.paper_numbers import PAPER, paper_value
from transplant.tasks import lower_is_better

METHOD_ORDER = ("identity", "direct_learn", "distill", "jacobian", "lstsq", "hybrid", "probe_stitch", "weight_match",
                "probe_distill",
                "back_distill_mean", "back_distill")
CONTROLS = ("identity",)  # not a method one would choose: excluded from "best method" figures
REGIME_TEXT = {
    "paper": "**Regime: paper.** Classifiers are 'a category vs random images' (negatives: the dissimilar "
             "categories and plain backgrounds, never another mammal), every shapes net is fine-tuned from one "
             "shared pre-trained base, and Exp.2/3 apply the channel reorder.",
    "hard": "**Regime: hard.** As the paper regime, but every classifier rejects every other category, the "
            "other mammals included: the dog's classifier has learnt to say 'no' to cats.",
    "independent": "**Regime: independent.** Negatives as in the paper regime, but every site's net starts "
                   "from its own random initialisation: the nets share nothing but the architecture.",
}
TITLES = {
    "exp1": ("Exp.1 (Table 2): adapter inserted into the same teacher (digits, 3x3 adapter, channel reorder), "
             "error rate %", "exp1"),
    "exp2": ("Exp.2 (Table 3 top): category modules into the dog's classification module (1x1 adapters, "
             "channel reorder, enlarged G), error rate %", "exp2"),
    "exp3": ("Exp.3 (Table 3 bottom): category modules into the dog's segmentation module (1-conv 1x1 adapter, "
             "channel reorder, uniform G)", "exp3"),
    "table4_cls": ("Table 4 (top): into a leave-one-out classification module (similar + dissimilar), error rate %",
                   "table4_cls"),
    "table4_seg": ("Table 4 (bottom): into a leave-one-out segmentation module (similar + dissimilar)",
                   "table4_seg"),
}


def section_of(row: dict) -> str:
    if row["experiment"] != "table4":
        return row["experiment"]
    return "table4_cls" if row["metric"] == "error_rate" else "table4_seg"


def aggregate(rows: list[dict]) -> dict:
    """(section, metric, layers, samples, method) -> {category: (mean, std, n), "Avg.": (mean, std, n)}.

    The Avg. column: per seed, the mean over categories; then mean and std over seeds.
    """
    by = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        key = (section_of(r), r["metric"], r["adapter_layers"], r["samples"], r["method"])
        by[key][r["category"]][r["seed"]] = r["value"]
    out = {}
    for key, cats in by.items():
        cell = {c: _ms(list(v.values())) for c, v in cats.items()}
        seeds = sorted(set.intersection(*[set(v) for v in cats.values()]))
        cell["Avg."] = _ms([float(np.mean([cats[c][s] for c in cats])) for s in seeds])
        out[key] = cell
    return out


def _ms(values: list[float]) -> tuple[float, float, int]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def teacher_values(rows: list[dict]) -> dict:
    out = {}
    for r in rows:
        out[(section_of(r), r["metric"], r["category"])] = r["teacher_value"]
    return out


def _fmt(ms: tuple[float, float, int] | None) -> str:
    if ms is None:
        return "—"
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def _table(agg: dict, teachers: dict, section: str, metric: str) -> list[str]:
    keys = sorted((k for k in agg if k[0] == section and k[1] == metric),
                  key=lambda k: (k[2], -k[3], METHOD_ORDER.index(k[4]) if k[4] in METHOD_ORDER else 9))
    if not keys:
        return ["(no rows: every category was excluded or the experiment was not run)", ""]
    cats = sorted({c for k in keys for c in agg[k] if c != "Avg."})
    paper_exp = "exp1" if section == "exp1" else section
    lines = ["| adapter | # samples | method | " + " | ".join(cats) + " | Avg. | paper Avg. |",
             "|---|---|---|" + "---|" * (len(cats) + 2)]
    for k in keys:
        _, _, layers, n, method = k
        cells = []
        for c in cats:
            p = paper_value(paper_exp, metric, layers, n, method, c) if section != "exp1" else None
            cells.append(_fmt(agg[k].get(c)) + (f" ({p:.2f})" if p is not None else ""))
        pa = paper_value(paper_exp, metric, layers, n, method, "Avg.")
        lines.append(f"| {layers}-conv | {n} | {method} | " + " | ".join(cells) + f" | **{_fmt(agg[k]['Avg.'])}** | "
                     + (f"{pa:.2f}" if pa is not None else "—") + " |")
    tv = [teachers.get((section, metric, c)) for c in cats]
    if all(v is not None for v in tv):
        lines.append("| teacher | all | own net | " + " | ".join(f"{v:.2f}" for v in tv)
                     + f" | {np.mean(tv):.2f} | — |")
    return lines + [""]


def verdicts(agg: dict) -> list[str]:
    """back-distill vs each baseline per cell (Avg. column): win / tie / loss by mean +- std overlap."""
    lines = []
    for key in sorted(agg):
        section, metric, layers, n, method = key
        if method != "back_distill" or n == 0:
            continue
        bd = agg[key]["Avg."]
        parts = []
        for other in METHOD_ORDER:
            okey = (section, metric, layers, n, other)
            if other == "back_distill" or okey not in agg:
                continue
            ob = agg[okey]["Avg."]
            diff = bd[0] - ob[0]
            if lower_is_better(metric):
                diff = -diff
            margin = bd[1] + ob[1]
            word = "win" if diff > margin else ("loss" if diff < -margin else "tie")
            parts.append(f"{word} vs {other} ({bd[0]:.1f} vs {ob[0]:.1f})")
        lines.append(f"- {section} {metric} {layers}-conv n={n}: " + "; ".join(parts))
    return lines


def best_methods(agg: dict, teachers: dict) -> list[str]:
    """Per (section, metric, layers, samples): the best method's Avg. against the teachers' mean."""
    cells = defaultdict(list)
    for (section, metric, layers, n, method), cell in agg.items():
        if method not in CONTROLS:
            cells[(section, metric, n)].append((cell["Avg."][0], method, layers, cell["Avg."][1]))
    lines = ["| experiment | metric | # samples | best method | Avg. | teachers | gap (points) |",
             "|---|---|---|---|---|---|---|"]
    for (section, metric, n), found in sorted(cells.items()):
        lower = lower_is_better(metric)
        value, method, layers, std = (min if lower else max)(found)
        tv = [v for (sec, met, _), v in teachers.items() if sec == section and met == metric]
        t = float(np.mean(tv)) if tv else float("nan")
        gap = (value - t) if lower else (t - value)
        lines.append(f"| {section} | {metric} | {n} | {method} ({layers}-conv) | {value:.2f} ± {std:.2f} | {t:.2f} | "
                     f"{gap:+.2f} |")
    return lines + [""]


def recovery_table(rows: list[dict]) -> list[str]:
    """How often each method's adapter maps every output channel to the input the reorder put there."""
    by = defaultdict(list)
    for r in rows:
        if r.get("perm_recovery") is not None and r["metric"] in ("error_rate", "pixel_accuracy"):
            by[(section_of(r), r["adapter_layers"], r["method"])].append(r["perm_recovery"])
    if not by:
        return []
    lines = ["| experiment | adapter | method | channels recovered (mean %) | runs with the exact permutation |",
             "|---|---|---|---|---|"]
    for (section, layers, method), values in sorted(by.items()):
        exact = sum(v == 1.0 for v in values)
        lines.append(f"| {section} | {layers}-conv | {method} | {100 * np.mean(values):.1f} | {exact}/{len(values)} |")
    return lines + [""]


def control_lines(meta: dict) -> list[str]:
    """The unchanged generic net on each target's own features (no adapter, no reorder)."""
    lines = []
    for experiment, tasks in meta.get("controls", {}).items():
        for task, cats in tasks.items():
            parts = []
            for c, m in sorted(cats.items()):
                if task == "classification":
                    parts.append(f"{c}: says yes to {m['yes_rate']:.1f}% of its images, {m['error_rate']:.1f}% error")
                else:
                    parts.append(f"{c}: pixel acc. {m['pixel_accuracy']:.1f}%, IoU {m['iou']:.1f}%")
            lines.append(f"- {experiment} {task}: " + "; ".join(parts))
    return lines


def write_report(out: Path, rows: list[dict], meta: dict) -> Path:
    agg = aggregate(rows)
    teachers = teacher_values(rows)
    s = meta.get("settings", {})
    md = ["# Network transplanting: the paper's experiments, reproduced on shipped data", ""]
    if s.get("regime") in REGIME_TEXT:
        md += [REGIME_TEXT[s["regime"]], ""]
    if s.get("quick"):
        md += ["**QUICK MODE**: a smoke test of the harness (1 seed, a few steps, tiny teachers). "
               "These numbers mean nothing.", ""]
    md += [
        f"Generated by `python -m benchmarks.paper bench` ({meta.get('command', '')}). Seeds: {s.get('seeds')}; "
        f"{s.get('steps')} Adam steps at lr {s.get('lr')} for every iterative method in every cell "
        "(lstsq is closed-form). Cells show mean ± std over seeds; the Avg. column averages the categories "
        "per seed, then takes mean ± std over seeds. Paper numbers in parentheses / the last column.", "",
        f"Wall time: {meta.get('total_seconds', 0):.0f} s in all "
        + ", ".join(f"{k} {v:.0f} s" for k, v in meta.get("seconds", {}).items())
        + f" (threads per process: 1; teachers {'from the cache' if meta.get('teachers_cached') else 'trained in this run'})."
        + (f" {meta['timing_note']}" if meta.get("timing_note") else "")
        + (f" {meta['resumed_rows']} rows were carried over from an interrupted run (`--resume`): their time is not "
           "in these figures, and their per-run diagnostics (sanity checks, PCA) are missing here."
           if meta.get("resumed_rows") else ""), "",
        "## Setup (choices the paper leaves open)", "",
        *[f"- {line}" for line in meta.get("choices", [])], "",
        "## Teachers and the IoU gate", "",
        f"A shapes teacher (or generic net) is used only if its object IoU on its own category's test set "
        f"is at least {s.get('iou_gate')}%; otherwise the category is excluded (listed below). A generic "
        f"classification module is transplanted into only if its error rate is at most {s.get('cls_gate', 100)}% "
        "(a classifier near chance gives an adapter nothing to aim at). "
        "The all-background pixel accuracy is what predicting background everywhere scores on the same "
        "test images (the object images of the test set).", "",
        "| teacher | cls error % | pixel acc. % | object IoU % | all-background pixel acc. % | used |",
        "|---|---|---|---|---|---|"]
    for name, t in meta.get("teachers", {}).items():
        f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
        md.append(f"| {name} | {f(t.get('classification_error_rate'))} | {f(t.get('pixel_accuracy'))} | "
                  f"{f(t.get('iou'))} | {f(t.get('background_pixel_accuracy'))} | {'yes' if t['passed'] else 'NO'} |")
    md.append("")
    for line in dict.fromkeys(f"- excluded: {e['experiment']} / {e['category']}: {e['why']}"
                              for e in meta.get("excluded", [])):  # Table 4 lists a net once per task
        md.append(line)
    if meta.get("excluded"):
        md.append("")
    below = meta.get("below_gate")
    if below:
        md += [f"**Below the gate.** {', '.join(below['experiments'])} had teachers below the {s.get('iou_gate')}% "
               f"IoU gate, so their tables here are incomplete or empty. The same experiments were rerun with the "
               f"gate lowered to {below['gate']}% (teachers that segment their objects, but coarsely): "
               f"[below_gate/paper.md](below_gate/paper.md) ({below['seconds']:.0f} s). Read those numbers as a "
               "comparison of methods on weak teachers, not as a reproduction of the paper's setting.", ""]
    if s.get("iou_gate", 60) < 60:
        md += [f"**This report uses a gate of {s.get('iou_gate')}% object IoU, below the project's 60% rule.** "
               "Teachers here segment their objects only coarsely; compare methods with each other and with the "
               "teacher, not with the paper's absolute numbers.", ""]
    bg = meta.get("background_pixel_accuracy", {})
    if bg:
        md += ["All-background pixel accuracy of each segmentation test set (object images only): "
               + ", ".join(f"{c} {v:.2f}%" for c, v in bg.items()), ""]
    for section, (title, _) in TITLES.items():
        metrics = ["error_rate"] if section in ("exp1", "exp2", "table4_cls") else ["pixel_accuracy", "iou"]
        md += [f"## {title}", ""]
        if section == "exp1":
            md += [f"Our categories are digits ({'/'.join(s.get('digits_categories', []))}), the paper's are VOC mammals, so only the paper's "
                   "Avg. is shown.", ""]
        for metric in metrics:
            if len(metrics) > 1:
                md += [f"### {metric} (%)" + (" — the paper's metric" if metric == "pixel_accuracy" else
                                               " of the object class"), ""]
            md += _table(agg, teachers, section, metric)
        plots = sorted(p.name for p in out.glob(f"{section}_*.png"))
        md += [f"![{p}]({p})" for p in plots] + [""]
    md += ["## Best method per cell (controls excluded) against the teachers", "", *best_methods(agg, teachers)]
    controls = control_lines(meta)
    if controls:
        md += ["## Controls: the unchanged generic net on the target's own features", "",
               "No adapter and no reorder: how far the two nets are apart before any transplant. The identity "
               "(beta-only) adapter rows in the tables are the other control: the reordered features, unadapted.",
               "", *controls, ""]
    recovery = recovery_table(rows)
    if recovery:
        md += ["## Channel permutation recovered", "",
               "For every adapter, the strongest input of each output channel of its channel map (the product of "
               "its convs' summed taps) against the input the reorder put there. Inside one net (Exp.1) that is "
               "the whole truth; across nets it assumes the nets' channels correspond, which a shared pre-trained "
               "start makes nearly so and independent initialisations do not.", "", *recovery]
    md += ["## back-distill against each baseline (Avg. column; win/loss = means differ by more than the sum of "
           "the stds)", "", *verdicts(agg), ""]
    sanity = meta.get("sanity", [])
    if sanity:
        md += ["## Sanity checks", "", *[f"- {line}" for line in sanity], ""]
    path = out / "paper.md"
    path.write_text("\n".join(md))
    return path


# ------------------------------------------------------------------ plots
def plot_curves(out: Path, rows: list[dict], background: dict | None = None) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    paths = []
    groups = defaultdict(list)
    for key in agg:
        groups[(key[0], key[1], key[2])].append(key)
    for (section, metric, layers), keys in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for method in METHOD_ORDER:
            ks = sorted((k for k in keys if k[4] == method), key=lambda k: k[3])
            if not ks:
                continue
            x = [k[3] for k in ks]
            y = np.array([agg[k]["Avg."][0] for k in ks])
            e = np.array([agg[k]["Avg."][1] for k in ks])
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
        tv = [r["teacher_value"] for r in rows if section_of(r) == section and r["metric"] == metric
              and r["adapter_layers"] == layers]
        if tv:
            ax.axhline(float(np.mean(list(dict.fromkeys(tv)))), color="k", ls="--", lw=1, label="teacher")
        if metric == "pixel_accuracy" and background:
            cats = {r["category"] for r in rows if section_of(r) == section}
            bg = [background[c] for c in cats if c in background]
            if bg:
                ax.axhline(float(np.mean(bg)), color="k", ls=":", lw=1, label="all-background")
        paper = PAPER.get((section, metric), {})
        for method, style in (("back_distill", "x:"), ("direct_learn", "+:")):
            pts = sorted((k[1], v["Avg."]) for k, v in paper.items() if k[0] == layers and k[2] == method)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color="grey", label=f"paper {method}")
        ax.set_xlabel("# labelled samples")
        ax.set_ylabel(f"{metric} (%), mean over categories")
        ax.set_title(f"{section} {layers}-conv adapter", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{section}_{metric}_{layers}conv.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_pca(out: Path, pca: dict) -> list[Path]:
    """Fig.5-style: first two principal components of the last layer's features, back-distill vs direct-learn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_exp = defaultdict(dict)
    for (experiment, category, task), feats in pca.items():
        by_exp[(experiment, task)][category] = feats
    paths = []
    for (experiment, task), cats in sorted(by_exp.items()):
        fig, axes = plt.subplots(1, len(cats), figsize=(max(5.0, 3.2 * len(cats)), 3.5), squeeze=False)
        for ax, (category, feats) in zip(axes[0], sorted(cats.items())):
            labels = [k for k in ("teacher", "back_distill", "direct_learn") if k in feats]
            stacked = np.concatenate([feats[k] for k in labels])
            mean = stacked.mean(0)
            _, _, vt = np.linalg.svd(stacked - mean, full_matrices=False)
            for k, colour in zip(labels, ("lightgrey", "tab:blue", "tab:red")):
                p = (feats[k] - mean) @ vt[:2].T
                ax.scatter(p[:, 0], p[:, 1], s=5, c=colour, label=k, alpha=0.7)
            ax.set_title(f"{category}", fontsize=9)
            ax.tick_params(labelsize=6)
        axes[0][0].legend(fontsize=6)
        layer = "score_fr" if task == "segmentation" else "last fc"
        fig.suptitle(f"{experiment}: PCA of {layer} features\n(blue back-distill, red direct-learn, grey teacher)",
                     fontsize=8)
        fig.tight_layout()
        path = out / f"{'table4_cls' if experiment == 'table4' and task == 'classification' else experiment}_pca.png"
        if experiment == "table4" and task == "segmentation":
            path = out / "table4_seg_pca.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def save_json(out: Path, rows: list[dict], meta: dict) -> Path:
    path = out / "paper.json"
    path.write_text(json.dumps(rows, indent=0))
    (out / "paper_meta.json").write_text(json.dumps(meta, indent=1, default=float))
    return path
