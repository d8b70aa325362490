"""benchmarks.paper merge: one report from parts run as separate processes, and nothing from an earlier report."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.paper.bench import merge

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _part(folder: Path, rows: list[dict], seconds: float, resumed: int = 0) -> Path:
    folder.mkdir()
    (folder / "paper.json").write_text(json.dumps(rows))
    meta = {"settings": {}, "seconds": {"table4": seconds}, "total_seconds": seconds, "runs": []}
    if resumed:
        meta["resumed_rows"] = resumed
    (folder / "paper_meta.json").write_text(json.dumps(meta))
    return folder


def test_parts_of_one_experiment_add_up_and_resumed_rows_are_said(tmp_path):
    rows = [r for r in json.loads((RESULTS / "paper.json").read_text()) if r["experiment"] == "table4"]
    assert {r["category"] for r in rows} >= {"cat", "sheep"}, "the committed results hold Table 4"
    first = _part(tmp_path / "a", [r for r in rows if r["category"] != "sheep"], 100.0, resumed=7)
    second = _part(tmp_path / "b", [r for r in rows if r["category"] == "sheep"], 50.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "exp2_pca.png").write_bytes(b"an earlier report's plot")

    meta = merge([first, second], out)

    assert meta["seconds"]["table4"] == 150.0                      # the targets' parts, not the last one
    assert meta["resumed_rows"] == 7
    report = (out / "paper.md").read_text()
    assert "7 rows were carried over from an interrupted run" in report
    assert not (out / "exp2_pca.png").exists() and "exp2_pca.png" not in report
    assert len(json.loads((out / "paper.json").read_text())) == len(rows)
