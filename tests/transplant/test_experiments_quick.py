"""`transplant bench --quick` end to end: rows, report, plots, the teacher IoU gate and the below-gate rerun."""
from __future__ import annotations

import json

import pytest

from transplant.cli import main

pytestmark = pytest.mark.slow

ROW_KEYS = {"experiment", "category", "adapter_layers", "samples", "method", "metric", "value", "seed",
            "teacher_value"}


def _check_rows(rows: list[dict]) -> None:
    assert rows and all(set(r) == ROW_KEYS for r in rows)
    for r in rows:
        assert r["metric"] in ("error_rate", "pixel_accuracy", "iou")
        assert 0.0 <= r["value"] <= 100.0 and 0.0 <= r["teacher_value"] <= 100.0
        assert isinstance(r["seed"], int) and isinstance(r["samples"], int)
        assert r["metric"] == "error_rate" or r["experiment"] in ("exp3", "table4")
        assert r["samples"] > 0 or r["method"].startswith("back_distill")


def test_quick_bench_all(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["bench", "all", "--quick", "--out", str(out), "--cache", str(cache)]) == 0

    # the gate (60% object IoU): tiny quick teachers never reach it, so the shapes experiments are excluded
    rows = json.loads((out / "paper.json").read_text())
    _check_rows(rows)
    assert {r["experiment"] for r in rows} == {"exp1"}
    meta = json.loads((out / "paper_meta.json").read_text())
    shapes = {n: t for n, t in meta["teachers"].items() if t.get("iou") is not None}
    assert shapes and all(t["passed"] == (t["iou"] >= 60.0) for t in shapes.values())
    assert {e["experiment"] for e in meta["excluded"]} == {"exp2", "exp3", "table4"}
    md = (out / "paper.md").read_text()
    assert "## Exp.1" in md and "excluded" in md and "below_gate/paper.md" in md
    assert {"exp1_error_rate_1conv.png", "exp1_error_rate_3conv.png", "exp1_pca.png"} <= {
        p.name for p in out.glob("*.png")}

    # the below-gate rerun (quick: gate 0) exercises every shapes experiment and method
    below = out / "below_gate"
    rows = json.loads((below / "paper.json").read_text())
    _check_rows(rows)
    assert {r["experiment"] for r in rows} == {"exp2", "exp3", "table4"}
    assert {"back_distill", "direct_learn", "distill", "jacobian", "lstsq"} <= {
        r["method"] for r in rows if r["experiment"] == "exp2"}
    assert {r["metric"] for r in rows if r["experiment"] == "exp3"} == {"pixel_accuracy", "iou"}
    assert json.loads((below / "paper_meta.json").read_text())["background_pixel_accuracy"]
    md = (below / "paper.md").read_text()
    assert "## Exp.3" in md and "all-background" in md and "below the project's 60% rule" in md
    assert {"exp2_pca.png", "exp3_pixel_accuracy_1conv.png", "table4_cls_error_rate_3conv.png"} <= {
        p.name for p in below.glob("*.png")}
