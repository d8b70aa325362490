"""Data sources and the workspace: what `train` writes and what serving reloads."""
from __future__ import annotations

import json

import pytest
import torch

from site_agent.data import load_source, parse_source, source_tasks
from site_agent.errors import SiteAgentError
from site_agent.workspace import eval_split, load_info, load_samples, load_spec_module, module_files
from transplant.metrics import evaluate
from transplant.net import join
from transplant.spec import ModuleSpec, weights_from_bytes


def test_parse_source_kinds_and_tasks():
    assert parse_source("digits:3").category == "3"
    folder = parse_source("folder:/data/a:b/imgs:cat")  # the class is the last field; paths may hold ':'
    assert (folder.path, folder.category) == ("/data/a:b/imgs", "cat")
    assert source_tasks("digits:3") == ("classification",)
    assert source_tasks("folder:/x:cat") == ("classification",)
    assert source_tasks("shapes:cat") == ("classification", "segmentation")
    assert source_tasks("voc:/x:dog") == ("classification", "segmentation")


@pytest.mark.parametrize("bad", ["digits", "digits:12", "mnist:3", "folder:/x", "folder:/no/such/dir:cat",
                                 "shapes:zebra", "voc:/no/such/voc:dog"])
def test_bad_sources_raise_site_agent_error(bad):
    with pytest.raises(SiteAgentError):
        load_source(bad, size=16)


def test_workspace_round_trip(workspace):
    info = load_info(workspace)
    doc = json.loads((workspace / "site.json").read_text())
    assert doc["format"] == "transplant.site.v1"
    assert (info.site_id, info.category, info.data, info.size, info.seed) == ("site-3", "3", "digits:3", 16, 0)
    assert info.tasks == ["classification"] and info.architecture["widths"] == [8, 16, 32]
    assert info.feature_norm_mean > 0 and info.num_images == len(load_source("digits:3", 16, 0).train)
    category, task = load_spec_module(workspace), load_spec_module(workspace, "classification")
    test = eval_split(info)  # reloaded from source + seed, never stored
    expected = load_source("digits:3", 16, 0).test
    assert torch.equal(test.images, expected.images) and torch.equal(test.labels, expected.labels)
    again = evaluate(join(category, task), "classification", test.images, test.labels)
    assert again["error_rate"] == pytest.approx(info.teacher_metrics["classification"]["error_rate"])
    assert not list(workspace.glob("**/*test*")), "the held-out split must not be written"


def test_module_files_validate_and_samples(workspace):
    files = {m.name: m for m in module_files(workspace)}
    assert list(files) == ["category", "task:classification", "samples"]
    for name in ("category", "task:classification"):
        weights_from_bytes(files[name].data, ModuleSpec.loads(files[name].spec_json))
    samples = load_samples(workspace)
    assert len(samples) == 8 and int(samples.labels.sum()) == 4  # balanced draw
    assert samples.images.dtype == torch.float32 and samples.labels.dtype == torch.int64 and samples.masks is None
    assert json.loads(files["samples"].spec_json)["num_samples"] == 8


def test_missing_and_corrupt_workspace(tmp_path, workspace):
    with pytest.raises(SiteAgentError, match="no site workspace"):
        load_info(tmp_path)
    (tmp_path / "site.json").write_text((workspace / "site.json").read_text())
    with pytest.raises(SiteAgentError, match="missing"):
        module_files(tmp_path)
