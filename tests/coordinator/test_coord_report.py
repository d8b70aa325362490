"""The HTML/PNG report tells the truth: routes coloured by their gap to the teacher on a visible scale,
native routes with their site's figures, candidates that did not enter listed with theirs, loss curves
normalised per job; and it renders in a real headless browser."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from coordinator.report import (candidate_rows, gap_colour, loss_curves, normalised_losses, quality_matrix,
                                quality_vs_samples, summary_html)
from protos.nt.v1 import common_pb2, control_pb2

CLS, SEG = "classification", "segmentation"
GREEN, RED = gap_colour(0.0, 30.0), gap_colour(30.0, 30.0)


def figures(**values: float) -> list[common_pb2.Metric]:
    return [common_pb2.Metric(name=k, value=v) for k, v in values.items()]


def entry(category: str, task: str, adapter: str, value: float, teacher: float, metric: str = "error_rate"):
    return control_pb2.NetEntry(category=category, task=task, adapter_id=adapter, method="lstsq" if adapter else "",
                                samples=10, quality=figures(**{metric: value}),
                                teacher_quality=figures(**{metric: teacher}))


def candidate(method: str, value: float, chosen: bool = False, metric: str = "error_rate") -> control_pb2.Candidate:
    return control_pb2.Candidate(method=method, chosen=chosen,
                                 metrics=figures(**{metric: value, f"teacher_{metric}": 5.0}))


NET = control_pb2.GetNetReply(name="site-dog", version=3, entries=[
    entry("dog", CLS, "", 4.0, 4.0),                 # native, the site's own figure
    entry("cat", CLS, "a1", 5.0, 5.0),               # as good as its teacher: green
    entry("cow", CLS, "a2", 40.0, 6.0),              # forced in, 34 points behind: red
    entry("cat", SEG, "a3", 50.0, 60.0, "iou")])     # 10 points behind in IoU (higher is better)
JOBS = [
    control_pb2.Job(job_id="j1", state=control_pb2.SUCCEEDED,
                    spec=control_pb2.TransplantJobSpec(category="cat", task=CLS, samples=10),
                    candidates=[candidate("lstsq", 5.0, chosen=True), candidate("identity", 12.0)]),
    control_pb2.Job(job_id="j2", state=control_pb2.REJECTED, reason="44.00 points behind the teacher",
                    spec=control_pb2.TransplantJobSpec(category="cow", task=CLS, samples=0),
                    candidates=[candidate("probe_stitch", 49.0, chosen=True)]),
]


def test_routes_are_coloured_by_their_gap_on_a_visible_scale() -> None:
    page = summary_html(NET, JOBS, [])
    assert f'<tr style="background:{GREEN}"><td>cat</td><td>classification</td>' in page
    assert f'<tr style="background:{RED}"><td>cow</td><td>classification</td>' in page
    assert "<td>iou</td><td>50.00</td><td>60.00</td><td>+10.0</td>" in page  # higher-is-better gap, in points
    assert "<td>dog</td><td>classification</td><td>native</td>" in page and "<td>4.00</td>" in page
    assert page.count('class="bar"') == 2 and "(the gate) or more" in page  # one scale per task
    assert GREEN != RED and gap_colour(-3.0, 30.0) == GREEN and gap_colour(99.0, 30.0) == RED


def test_candidates_that_did_not_enter_are_listed_with_their_figures() -> None:
    rows = "".join(candidate_rows(JOBS))
    assert "<td>identity</td><td>error_rate</td><td>12.00</td><td>5.00</td><td>+7.0</td><td>beaten by lstsq</td>" in rows
    assert "<td>probe_stitch</td>" in rows and "job REJECTED: 44.00 points behind the teacher" in rows
    assert "<td>lstsq</td>" not in rows  # the chosen candidate of a job that entered is the route itself


def test_loss_curves_are_normalised_per_job(tmp_path) -> None:
    events = [control_pb2.JobEvent(step=s, loss=v) for s, v in ((0, 800.0), (10, 400.0), (20, 0.0))]
    assert normalised_losses(events) == [1.0, 0.5, 1e-12 / 800.0]
    small = [control_pb2.JobEvent(step=s, loss=v) for s, v in ((0, 0.02), (10, 0.01))]
    assert normalised_losses(small)[-1] == normalised_losses(events)[1]  # different scales, same shape
    assert loss_curves({"j": ("j", events)}, tmp_path / "loss.png").stat().st_size > 5_000


def write_pages(directory: Path) -> Path:
    images = [quality_matrix(list(NET.entries), directory / "quality_matrix.png").name,
              quality_vs_samples(JOBS, directory / "quality_vs_samples.png").name]
    (directory / "index.html").write_text(summary_html(NET, JOBS, images))
    return directory / "index.html"


def browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(browser() is None, reason="no headless browser installed (tests/setup_services.sh installs one)")
def test_the_report_renders_in_a_headless_browser(tmp_path) -> None:
    page = write_pages(tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1400",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, tables, plots: not a blank page
    present = {c for _, c in colours}
    for hex_colour in (GREEN, RED):  # the route colours made it onto the screen
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        assert any(sum(abs(a - b) for a, b in zip(rgb, c)) < 12 for c in present), hex_colour
