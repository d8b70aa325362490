"""`python -m benchmarks.paper ceiling`: every adapter shape trained on many labels, beside the teachers."""
from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks.paper.ceiling import SHAPES, run_ceiling
from benchmarks.paper.settings import QUICK

pytestmark = pytest.mark.slow


def test_ceiling_rows_and_table(tmp_path):
    settings = dataclasses.replace(QUICK, iou_gate=0.0, cls_gate=100.0)  # tiny quick teachers pass every gate
    run_ceiling(tmp_path / "out", tmp_path / "cache", samples=40, steps=3, settings=settings)
    rows = json.loads((tmp_path / "out" / "ceiling.json").read_text())
    assert {(r["experiment"], r["metric"]) for r in rows} == {("exp2", "error_rate"), ("exp3", "iou")}
    assert {(r["adapter_layers"], r["kernel_size"]) for r in rows} == set(SHAPES)
    assert all(0.0 <= r["value"] <= 100.0 and r["samples"] == 40 and r["regime"] == "paper" for r in rows)
    table = (tmp_path / "out" / "ceiling.md").read_text()
    # a row per category and adapter shape, then one average row per adapter shape
    assert table.count("| exp2 |") == table.count("| exp3 |") == len(SHAPES) * (len(settings.targets) + 1)
    assert "3-conv 3x3" in table and "Avg. with many labels" in table
