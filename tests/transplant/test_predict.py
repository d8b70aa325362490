"""Predictions for end users: preprocessing and output meaning travel with the net; predict and its CLI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from site_agent.train import record_meaning
from transplant.adapter import Adapter, AdapterConfig
from transplant.architectures import CLASSIFICATION, SEGMENTATION, teacher_specs, vgg_small
from transplant.cli import main
from transplant.data.folders import preprocess_image
from transplant.net import TransplantNet
from transplant.spec import ModuleSpec, SpecError
from transplant.spec.schema import default_preprocess, preprocess_of
from transplant.teacher import TeacherNet

from tests.transplant.conftest import DIGITS_CONFIG


@pytest.fixture(scope="module")
def digits_net(digits_teacher, tmp_path_factory) -> Path:
    """digit3 (trained, described by its site) natively; digit5 (an old spec, no metadata) via an adapter."""
    teacher = copy.deepcopy(digits_teacher[0])  # the session fixture stays as it was
    record_meaning(teacher, "digit3", channels=1, size=16)
    other = TeacherNet(teacher_specs(DIGITS_CONFIG, (CLASSIFICATION,)))
    net = TransplantNet()
    net.add_category("digit3", teacher.category)
    net.add_task(CLASSIFICATION, teacher.task_module(CLASSIFICATION), native_category="digit3")
    net.add_category("digit5", other.category)
    net.add_adapter("digit5", CLASSIFICATION, Adapter(AdapterConfig(channels=16)))
    return net.save(tmp_path_factory.mktemp("digits") / "net")


@pytest.fixture(scope="module")
def shapes_net(tmp_path_factory) -> Path:
    """An untrained RGB dog teacher with both heads: the test checks the path, not the quality."""
    torch.manual_seed(0)
    teacher = TeacherNet(teacher_specs(vgg_small(width=4, depth=3, image_size=16, fc=16),
                                       (CLASSIFICATION, SEGMENTATION)))
    record_meaning(teacher, "dog", channels=3, size=16)
    net = TransplantNet()
    net.add_category("dog", teacher.category)
    for task in (CLASSIFICATION, SEGMENTATION):
        net.add_task(task, teacher.task_module(task), native_category="dog")
    return net.save(tmp_path_factory.mktemp("shapes") / "net")


def _png(path: Path, shape: tuple[int, ...], seed: int, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


def _cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def _forward(net: TransplantNet, path: Path, category: str, task: str, channels: int) -> torch.Tensor:
    with Image.open(path) as im:
        x = torch.from_numpy(preprocess_image(im, channels, 16))
    with torch.no_grad():
        return net(x[None], category, task)[0]


def test_predict_on_tensors_equals_the_forward_and_applies_the_threshold(digits_net, digits_teacher):
    net = TransplantNet.load(digits_net)
    x = digits_teacher[1].test.images[:6]
    with torch.no_grad():
        logits = net(x, "digit3", CLASSIFICATION).reshape(-1)
    results = net.predict(x, "digit3", CLASSIFICATION)
    assert [r["score"] for r in results] == pytest.approx(logits.tolist(), abs=1e-6)
    assert [r["label"] for r in results] == ["digit3" if v > 0 else "not digit3" for v in logits.tolist()]
    single = net.predict(x[0], "digit3", CLASSIFICATION)  # one [C, H, W] tensor is one image
    # a batch of one and a batch of many may take different float32 kernels: equal to float32 precision
    assert single[0]["score"] == pytest.approx(results[0]["score"], rel=1e-6, abs=1e-6)


def test_conversions_and_clear_errors(digits_net, shapes_net, tmp_path):
    digits, shapes = TransplantNet.load(digits_net), TransplantNet.load(shapes_net)
    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 24, 4), dtype=np.uint8), "RGBA")
    assert len(digits.predict([rgba, torch.rand(3, 16, 16)], "digit3", CLASSIFICATION)) == 2  # -> greyscale
    assert len(shapes.predict(torch.rand(2, 1, 9, 9), "dog", CLASSIFICATION)) == 2  # grey -> RGB, resized
    with pytest.raises(ValueError, match="2 channel"):
        digits.predict(torch.rand(2, 16, 16), "digit3", CLASSIFICATION)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="broken.png"):
        digits.predict([bad], "digit3", CLASSIFICATION)
    with pytest.raises(ValueError, match="unknown category 'digit9'.*digit3, digit5"):
        digits.predict(torch.rand(1, 16, 16), "digit9", CLASSIFICATION)
    with pytest.raises(ValueError, match="unknown task 'segmentation'.*classification"):
        digits.predict(torch.rand(1, 16, 16), "digit3", SEGMENTATION)


def test_cli_classification_on_files_and_folders(digits_net, tmp_path, capsys):
    folder = tmp_path / "imgs"
    files = [_png(folder / "a.png", (16, 16), 0, "L"), _png(folder / "sub" / "b.png", (16, 16), 1, "L"),
             _png(folder / "sub" / "wide_rgb.jpg", (30, 50, 3), 2)]  # wrong size and channels: converted
    single = _png(tmp_path / "single.png", (8, 8), 3, "L")
    (folder / "notes.txt").write_text("not an image, skipped by the folder walk")
    code, lines, _ = _cli(capsys, "--net", digits_net, "--category", "digit3", "--task", CLASSIFICATION,
                          folder, single)
    assert code == 0
    assert [Path(ln["file"]).name for ln in lines] == ["a.png", "b.png", "wide_rgb.jpg", "single.png"]
    net = TransplantNet.load(digits_net)
    for ln, f in zip(lines, files + [single]):
        logit = float(_forward(net, f, "digit3", CLASSIFICATION, channels=1))
        assert ln["category"] == "digit3" and ln["task"] == CLASSIFICATION
        assert ln["score"] == pytest.approx(logit, abs=1e-5)
        assert ln["label"] == ("digit3" if logit > 0 else "not digit3")


def test_cli_corrupt_file_is_an_error_line_and_exit_1(digits_net, tmp_path, capsys):
    good = _png(tmp_path / "good.png", (16, 16), 0, "L")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code, lines, _ = _cli(capsys, "--net", digits_net, "--category", "digit3", good, bad, tmp_path / "missing.png")
    assert code == 1
    assert "score" in lines[0] and "error" not in lines[0]
    assert "corrupt.png" in lines[1]["error"] and "not a readable image" in lines[1]["error"]
    assert "no such file" in lines[2]["error"]


def test_cli_unknown_category_exits_2_naming_the_known_ones(digits_net, tmp_path, capsys):
    code, lines, err = _cli(capsys, "--net", digits_net, "--category", "cat", _png(tmp_path / "x.png", (16, 16), 0))
    assert code == 2 and not lines and "digit3, digit5" in err
    code, _, err = _cli(capsys, "--net", tmp_path, "--category", "digit3", tmp_path)
    assert code == 2 and "net.json missing" in err


def test_cli_net_given_as_an_address_names_the_command_that_takes_one(tmp_path, capsys):
    image = _png(tmp_path / "a.png", (16, 16), 0)
    code, lines, err = _cli(capsys, "--net", "coord.example:50051", "--category", "cat", image)
    assert (code, lines) == (2, [])
    assert "python -m coordinator.serving predict --coordinator coord.example:50051" in err


def test_cli_all_categories_ranks_every_route(digits_net, tmp_path, capsys):
    f = _png(tmp_path / "x.png", (16, 16), 4, "L")
    code, lines, _ = _cli(capsys, "--net", digits_net, "--all-categories", f)
    assert code == 0 and len(lines) == 1
    ranking = lines[0]["ranking"]
    assert sorted(r["category"] for r in ranking) == ["digit3", "digit5"]
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    assert lines[0]["category"] == ranking[0]["category"] and lines[0]["score"] == ranking[0]["score"]
    net = TransplantNet.load(digits_net)
    for r in ranking:
        assert r["score"] == pytest.approx(float(_forward(net, f, r["category"], CLASSIFICATION, 1)), abs=1e-5)


def test_cli_segmentation_writes_masks_and_overlays(shapes_net, tmp_path, capsys):
    files = [_png(tmp_path / "in" / "dog1.png", (16, 16, 3), 5), _png(tmp_path / "in" / "big.png", (48, 64, 3), 6)]
    code, lines, _ = _cli(capsys, "--net", shapes_net, "--category", "dog", "--task", SEGMENTATION,
                          "--out", tmp_path / "out", tmp_path / "in")
    assert code == 0 and len(lines) == 2
    net = TransplantNet.load(shapes_net)
    by_name = {Path(ln["file"]).name: ln for ln in lines}
    for f in files:
        ln, logits = by_name[f.name], _forward(net, f, "dog", SEGMENTATION, channels=3)
        mask = logits.argmax(0)
        assert ln["foreground_fraction"] == pytest.approx(float((mask != 0).float().mean()))
        assert ln["score"] == pytest.approx(float(1 - logits.softmax(0)[0].mean()), abs=1e-5)
        with Image.open(ln["overlay"]) as overlay, Image.open(f) as source:
            assert overlay.size == source.size and overlay.mode == "RGB"
    results = net.predict(files, "dog", SEGMENTATION)
    assert results[0]["mask"].shape == (16, 16)


def test_metadata_travels_with_the_net_and_old_specs_get_the_default(digits_net, shapes_net):
    doc = json.loads((digits_net / "net.json").read_text())
    assert doc["preprocess"]["digit3"] == {"channels": 1, "size": [16, 16], "resize": "bilinear",
                                           "divide": 255.0, "mean": [0.0], "std": [1.0]}
    assert doc["preprocess"]["digit5"] == doc["preprocess"]["digit3"]  # the default for an unannotated spec
    assert doc["outputs"][CLASSIFICATION]["classes"] == ["not digit3", "digit3"]
    assert doc["outputs"][CLASSIFICATION]["threshold"] == 0.0
    seg = json.loads((shapes_net / "net.json").read_text())["outputs"][SEGMENTATION]
    assert seg == {"kind": SEGMENTATION, "classes": ["background", "dog"], "mask": "argmax"}
    spec = TransplantNet.load(digits_net).categories["digit5"].spec
    assert "preprocess" not in spec.metadata and preprocess_of(spec) == default_preprocess((1, 16, 16))


@pytest.mark.parametrize("key, value, message", [
    ("preprocess", {"channels": 3}, "reads 1 channel"),
    ("preprocess", {"size": [32, 32]}, r"\[H, W\] = \[16, 16\]"),
    ("preprocess", {"resize": "nearest"}, "resize must be one of"),
    ("preprocess", {"std": [0.0]}, "std must be positive"),
    ("preprocess", {"colour": "rgb"}, "unknown field"),
    ("output", {"kind": "classification", "classes": ["a", "b", "c"]}, "2 classes"),
    ("output", {"kind": "segmentation"}, "outputs|segmentation output"),
    ("output", {"kind": "detection"}, "must be 'classification' or 'segmentation'"),
])
def test_bad_metadata_is_refused_by_the_schema(digits_teacher, key, value, message):
    net = digits_teacher[0]
    spec = (net.category if key == "preprocess" else net.task_module(CLASSIFICATION)).spec
    doc = {**spec.to_json(), "metadata": {**spec.metadata, key: value}}
    with pytest.raises(SpecError, match=message):
        ModuleSpec.from_json(doc)
