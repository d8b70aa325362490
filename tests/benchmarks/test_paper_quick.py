"""`python -m benchmarks.paper bench --quick` end to end: rows, report, plots, the teacher IoU gate and the below-gate rerun."""
from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from transplant.architectures import CLASSIFICATION, teacher_specs, vgg_small
from benchmarks.paper.cli import main
from benchmarks.paper.bench import bench, bench_parallel, split_work
from benchmarks.paper.cases import Context, shapes_base
from benchmarks.paper.settings import EXPERIMENTS, QUICK, REGIMES
from transplant.methods import METHODS
from benchmarks.paper.teachers import Teacher, cached
from transplant.spec.build import build_module

pytestmark = pytest.mark.slow

ROW_KEYS = {"experiment", "category", "adapter_layers", "samples", "method", "metric", "value", "seed",
            "teacher_value", "regime", "perm_recovery"}


def _check_rows(rows: list[dict]) -> None:
    assert rows and all(set(r) == ROW_KEYS for r in rows)
    for r in rows:
        assert r["metric"] in ("error_rate", "pixel_accuracy", "iou")
        assert 0.0 <= r["value"] <= 100.0 and 0.0 <= r["teacher_value"] <= 100.0
        assert isinstance(r["seed"], int) and isinstance(r["samples"], int)
        assert r["metric"] == "error_rate" or r["experiment"] in ("exp3", "table4")
        core = METHODS["back_distill" if r["method"] == "back_distill_mean" else r["method"]]
        assert (r["samples"] > 0 or not core.needs_samples) and (r["samples"] == 0 or core.uses_samples)
        assert r["regime"] in REGIMES
        assert r["perm_recovery"] is None or 0.0 <= r["perm_recovery"] <= 1.0


def test_quick_bench_all(tmp_path):
    """Two worker processes (as `make bench` runs), merged into one report with a merged below-gate rerun."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["bench", "all", "--quick", "--workers", "2", "--out", str(out), "--cache", str(cache)]) == 0
    assert len(list((out / "parts").iterdir())) == 2

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
    assert {"back_distill", "direct_learn", "distill", "jacobian", "lstsq", "probe_stitch", "weight_match", "hybrid",
            "identity", "probe_distill"} <= {r["method"] for r in rows if r["experiment"] == "exp2"}
    assert {r["adapter_layers"] for r in rows if r["experiment"] == "exp2"} == {1, 3}
    assert {r["metric"] for r in rows if r["experiment"] == "exp3"} == {"pixel_accuracy", "iou"}
    assert json.loads((below / "paper_meta.json").read_text())["background_pixel_accuracy"]
    md = (below / "paper.md").read_text()
    assert "## Exp.3" in md and "all-background" in md and "below the project's 60% rule" in md
    assert "## Best method per cell" in md and "says yes to" in md and "Regime: paper" in md
    assert "## Channel permutation recovered" in md
    assert {"exp2_pca.png", "exp3_pixel_accuracy_1conv.png", "table4_cls_error_rate_3conv.png"} <= {
        p.name for p in below.glob("*.png")}


def test_split_work_balances_and_keeps_order():
    assert split_work(EXPERIMENTS, 1) == [EXPERIMENTS]
    groups = split_work(EXPERIMENTS, 2)
    assert sorted(e for g in groups for e in g) == sorted(EXPERIMENTS) and len(groups) == 2
    assert all(list(g) == [e for e in EXPERIMENTS if e in g] for g in groups)
    assert split_work(("exp1",), 4) == [("exp1",)]


def test_teacher_cache_builds_once_under_concurrency(tmp_path):
    """Parallel bench workers asking for the same teacher: one trains it, the other waits and loads it."""
    calls = []

    def build() -> Teacher:
        calls.append(1)
        time.sleep(0.3)
        module = build_module(teacher_specs(vgg_small(width=4, depth=3, image_size=8), (CLASSIFICATION,)).category)
        return Teacher("t", {"t": module}, {}, {"x": 1.0}, {"t": 2.0})

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda _: cached(tmp_path, "t", {"k": 1}, build), range(2)))
    assert len(calls) == 1
    assert all(t.metrics == {"x": 1.0} and t.feature_norm == {"t": 2.0} for t in got)
    assert [p.name for p in (tmp_path / "teachers").iterdir() if ".tmp" in p.name] == []


def test_quick_bench_from_a_pretrained_base(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["bench", "exp3", "--quick", "--pretrain", "6", "--iou-gate", "0", "--targets", "cow",
                 "--samples", "10", "--out", str(out), "--cache", str(cache)]) == 0
    rows = json.loads((out / "paper.json").read_text())
    _check_rows(rows)
    assert {(r["experiment"], r["category"]) for r in rows} == {("exp3", "cow")}
    assert {r["samples"] for r in rows} == {0, 10}
    assert len(list((cache / "teachers").glob("base-*[!k]"))) == 1  # one base (and its .lock)
    meta = json.loads((out / "paper_meta.json").read_text())
    assert any(c.startswith("**Shared pre-trained start.**") for c in meta["choices"])
    assert "Shared pre-trained start" in (out / "paper.md").read_text()


def test_a_failed_worker_stops_the_parallel_bench_with_its_log(tmp_path):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the teacher cache should be")
    with pytest.raises(RuntimeError, match=r"bench worker .* failed with exit code [1-9]"):
        bench_parallel(("exp1", "exp2"), tmp_path / "out", 2, ["--cache", str(not_a_folder), "--quick"])
    assert not (tmp_path / "out" / "paper.json").exists()


def test_a_generic_classifier_near_chance_is_not_transplanted_into(tmp_path):
    settings = dataclasses.replace(QUICK, cls_gate=0.0, iou_gate=0.0, below_gate=None)
    meta = bench(("exp2",), tmp_path / "out", settings, tmp_path / "cache")
    assert json.loads((tmp_path / "out" / "paper.json").read_text()) == []
    assert [e["category"] for e in meta["excluded"]] == ["cat"]
    assert "generic classifier" in meta["excluded"][0]["why"] and "> 0.0%" in meta["excluded"][0]["why"]


def test_the_pretrained_base_is_built_once_per_run(tmp_path):
    ctx = Context(dataclasses.replace(QUICK, pretrain_per_category=3), tmp_path)
    base = shapes_base(ctx)
    assert isinstance(base, Teacher) and shapes_base(ctx) is base
    independent = dataclasses.replace(QUICK, regime="independent")
    assert shapes_base(Context(independent, tmp_path)) is None  # every net from its own init
    assert shapes_base(Context(dataclasses.replace(QUICK, pretrain_per_category=None), tmp_path)) is None


def test_regimes_set_negatives_bases_and_inits():
    paper, hard = QUICK, dataclasses.replace(QUICK, regime="hard")
    independent = dataclasses.replace(QUICK, regime="independent")
    assert "cat" not in paper.negatives() and "background" in paper.negatives() and "cat" in hard.negatives()
    assert paper.shared_base and hard.shared_base and not independent.shared_base
    assert paper.init_seed("cat") == paper.init_seed("dog")
    assert len({independent.init_seed(c) for c in ("cat", "dog", "cow")}) == 3
    with pytest.raises(ValueError, match="unknown regime"):
        dataclasses.replace(QUICK, regime="easy")
