"""`python -m coordinator.serving predict`: the JSON lines of `transplant predict`, from a Predict server
(files and folders, classification and segmentation, a corrupt and a wrong-sized image) or from a
coordinator's latest promoted net."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from coordinator.serving.cli import build_parser, main
from coordinator.store import LocalStore
from tests.coordinator.serving.conftest import LIMITS, png
from tests.helpers.cluster import coordinator, issue
from tests.helpers.nets import base_net


def _files(root: Path) -> list[Path]:
    (root / "folder" / "sub").mkdir(parents=True)
    files = [root / "a.png", root / "folder" / "b.jpg", root / "folder" / "sub" / "c.png"]
    files[0].write_bytes(png((20, 20, 3), 1))
    files[1].write_bytes(png((30, 18, 3), 2, fmt="JPEG"))
    files[2].write_bytes(png((16, 16), 3))
    return files


def _run(capsys, monkeypatch, token: str, *argv) -> tuple[int, list[dict], str]:
    monkeypatch.setenv("TRANSPLANT_CLIENT_TOKEN", token)
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def test_files_and_folders_through_the_service(replica, tmp_path, capsys, monkeypatch):
    files = _files(tmp_path)
    code, lines, err = _run(capsys, monkeypatch, replica.tokens.client, "--server", replica.handle.address,
                            "--category", "dog", files[0], tmp_path / "folder")
    assert code == 0, err
    assert [ln["file"] for ln in lines] == [str(f) for f in files]
    assert all(ln["label"] in ("dog", "not dog") and "probability" in ln for ln in lines)
    code, lines, err = _run(capsys, monkeypatch, replica.tokens.client, "--server", replica.handle.address,
                            "--category", "dog", "--task", "segmentation", "--out", tmp_path / "out", tmp_path)
    assert code == 0, err
    for line in lines:
        assert 0 <= line["foreground_fraction"] <= 1
        with Image.open(line["overlay"]) as overlay, Image.open(line["file"]) as source:
            assert overlay.size == source.size


def test_a_corrupt_and_a_wrong_sized_image_get_error_lines_the_others_answers(replica, tmp_path, capsys,
                                                                              monkeypatch):
    good = tmp_path / "good.png"
    good.write_bytes(png((20, 20, 3), 1))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "strip.png").write_bytes(png((1, LIMITS.max_side + 1), 2))
    code, lines, _ = _run(capsys, monkeypatch, replica.tokens.client, "--server", replica.handle.address,
                          "--category", "dog", tmp_path, tmp_path / "missing.png")
    by_name = {Path(ln["file"]).name: ln for ln in lines}
    assert code == 1 and "no such file" in by_name["missing.png"]["error"]
    assert "not a readable image" in by_name["broken.png"]["error"]
    assert f"each side must be 1 to {LIMITS.max_side} pixels" in by_name["strip.png"]["error"]
    assert "score" in by_name["good.png"]


def test_unknown_route_and_refused_token_exit_2_with_one_line(replica, tmp_path, capsys, monkeypatch):
    files = _files(tmp_path)
    code, lines, err = _run(capsys, monkeypatch, replica.tokens.client, "--server", replica.handle.address,
                            "--category", "cat", files[0])
    assert (code, lines) == (2, []) and "does not serve (cat, classification); it serves dog/classification" in err
    code, _, err = _run(capsys, monkeypatch, replica.tokens.site, "--server", replica.handle.address,
                        "--category", "dog", files[0])
    assert code == 2 and "PERMISSION_DENIED" in err


def test_requests_stay_within_the_servers_count_and_byte_limits(replica, tmp_path, capsys, monkeypatch):
    images = []
    for i in range(6):  # 6 x 234 KB (each under the 256 KiB image limit) against 1 MiB a request
        images.append(tmp_path / f"{i}.png")
        images[-1].write_bytes(png((260, 300, 3), i))
    assert all(f.stat().st_size < LIMITS.max_image_bytes for f in images)
    assert sum(f.stat().st_size for f in images) > LIMITS.max_request_bytes
    answered = replica.handle.metrics.requests.labels("dog", "classification", "OK")
    before = answered._value.get()
    code, lines, err = _run(capsys, monkeypatch, replica.tokens.client, "--server", replica.handle.address,
                            "--category", "dog", *images)
    assert code == 0, err
    assert [Path(ln["file"]).name for ln in lines] == [f.name for f in images] and all("score" in ln for ln in lines)
    assert answered._value.get() - before == 2  # 4 + 2 images, not one refused request and 6 retries


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "(default: 32)" in text and "(default: 50071)" in text and "--max-pixels" in text


@pytest.mark.slow
def test_predict_from_a_coordinators_latest_promoted_net(ray_session, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRANSPLANT_ADMIN_TOKEN", issue(tmp_path / "auth.json", "admin", "alice"))
    base_net(LocalStore(tmp_path / "store"))  # as the coordinator's commits leave it
    handle = coordinator(tmp_path, auth_file=tmp_path / "auth.json")
    try:
        files = _files(tmp_path / "images")
        code = main(["predict", "--coordinator", handle.address, "--cache", str(tmp_path / "nets"),
                     "--category", "dog", str(tmp_path / "images")])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert [json.loads(ln)["file"] for ln in out.out.splitlines()] == [str(f) for f in files]
        assert (tmp_path / "nets" / "site-dog" / "v1" / "net.json").is_file()
    finally:
        handle.stop(0)
