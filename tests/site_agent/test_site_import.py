"""`python -m site_agent import`: nets a site already has (torchvision-layout VGG-16, an FCN-8s-style segmenter,
any torch.fx-traceable model) become its workspace, evaluated on its own data, then pushed to a real registry.

No torchvision: the state dicts are the project's own VGG-16 / FCN-8s definitions with random weights, saved
under torchvision's keys (tests/helpers/site_nets.py). An import must compute exactly what the original does.
"""
from __future__ import annotations

import dataclasses
import pickle
from concurrent import futures

import grpc
import pytest
import torch
from safetensors.torch import save_file

from coordinator.registry_service import RegistryService
from coordinator.store import LocalStore
from protos.nt.v1 import registry_pb2, registry_pb2_grpc
from site_agent.cli import main
from site_agent.workspace import load_info, load_spec_module
from tests.helpers.site_nets import (NARROW_VGG16, fcn_state_dict, project_net, small_net, vgg_state_dict,
                                     write_folder, write_voc)
from transplant.importing import TorchvisionVGG
from transplant.spec import output_shape


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "images", {"cat": 10, "random": 10})


@pytest.fixture()
def registry(tmp_path):
    server = grpc.server(futures.ThreadPoolExecutor(4))
    registry_pb2_grpc.add_ModuleRegistryServicer_to_server(RegistryService(LocalStore(tmp_path / "store")), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield f"127.0.0.1:{port}", registry_pb2_grpc.ModuleRegistryStub(channel)
    channel.close()
    server.stop(None)


def _import(ws, weights, data, *extra):
    return main(["import", "--workspace", str(ws), "--site-id", "acme", "--data", data, "--weights", str(weights),
                 "--no-progress", *extra])


def _imported(ws):
    category, info = load_spec_module(ws), load_info(ws)
    return category, load_spec_module(ws, info.tasks[0]), info


def test_torchvision_vgg16_state_dict_becomes_a_pushed_site(tmp_path, folder, registry, capsys):
    """One command: a 2-way torchvision-layout VGG-16 .pth on disk -> modules on the registry, metric printed first."""
    state, ours = vgg_state_dict(outputs=2)
    assert {"features.0.weight", "features.28.weight", "classifier.6.weight"} <= set(state)  # torchvision's keys
    torch.save(state, tmp_path / "vgg16.pth")
    address, stub = registry
    code = _import(tmp_path / "ws", tmp_path / "vgg16.pth", f"folder:{folder}:cat", "--input-size", "32",
                   "--coordinator", address)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.index("held-out classification") < out.index("category\t")  # evaluated before anything is pushed
    category, task, info = _imported(tmp_path / "ws")
    assert [n.name for n in category.spec.nodes][-1] == "pool1" and output_shape(task.spec) == (1,)
    x = torch.rand(4, 3, 32, 32)
    reference = project_net(dataclasses.replace(NARROW_VGG16, num_outputs=2), "classification", ours)
    with torch.no_grad():
        logits = reference(x)
        torch.testing.assert_close(task(category(x)), logits[:, 1:] - logits[:, :1])  # the 2-way log-odds
    stored = stub.List(registry_pb2.ListModulesRequest(site_id="acme")).modules
    assert sorted(m.task or "category" for m in stored) == ["category", "classification"]
    assert info.mean == [0.485, 0.456, 0.406] and "error_rate" in info.teacher_metrics["classification"]


def test_non_square_input_folds_the_adaptive_pool_exactly(tmp_path, folder):
    """torchvision's 7x7 adaptive pool (here 1x1) is folded into fc6 for a 64x96 input, from safetensors."""
    state, _ = vgg_state_dict(outputs=1)
    save_file(state, tmp_path / "vgg.safetensors")
    assert _import(tmp_path / "ws", tmp_path / "vgg.safetensors", f"folder:{folder}:cat", "--input-size", "64x96",
                   "--split", "pool2", "--mean", "0,0,0", "--std", "1,1,1") == 0
    category, task, info = _imported(tmp_path / "ws")
    assert category.spec.input_shape == (3, 64, 96) and category.spec.output == "pool2"
    assert info.input_size == [64, 96]
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(task(category(x)), TorchvisionVGG(state).eval()(x), rtol=1e-4, atol=1e-5)


def test_fcn8s_on_a_voc_tree_keeps_background_and_the_category(tmp_path):
    """21-class FCN-8s-style weights on a generated VOC-layout tree: channels 0 and 'cat' (8) are kept."""
    voc = write_voc(tmp_path / "VOC", {"train": [8, 8, 12, 8, 12, 15], "val": [8, 12, 8, 15]})
    state, ours = fcn_state_dict(classes=21)
    torch.save(state, tmp_path / "fcn.pth")
    assert _import(tmp_path / "ws", tmp_path / "fcn.pth", f"voc:{voc}:cat", "--input-size", "64") == 0
    category, task, info = _imported(tmp_path / "ws")
    assert info.tasks == ["segmentation"] and output_shape(task.spec) == (2, 64, 64)
    cfg = dataclasses.replace(NARROW_VGG16, image_size=64, seg_classes=21)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(task(category(x)), project_net(cfg, "segmentation", ours)(x)[:, [0, 8]])
    assert set(info.teacher_metrics["segmentation"]) == {"pixel_accuracy", "iou"}


def test_any_fx_traceable_model_and_the_ops_it_may_not_use(tmp_path, folder, capsys):
    torch.save(small_net().state_dict(), tmp_path / "small.pth")
    assert _import(tmp_path / "ws", tmp_path / "small.pth", f"folder:{folder}:cat", "--input-size", "24",
                   "--model", "tests.helpers.site_nets:small_net") == 0  # default cut: after the first max pool
    category, task, _ = _imported(tmp_path / "ws")
    assert [n.op for n in category.spec.nodes] == ["conv2d", "batchnorm2d", "relu", "maxpool2d"]
    assert "add" in [n.op for n in task.spec.nodes]
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(task(category(x)), small_net().eval()(x), rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    code = _import(tmp_path / "ws2", tmp_path / "small.pth", f"folder:{folder}:cat", "--input-size", "24",
                   "--model", "tests.helpers.site_nets:gelu_net")
    err = capsys.readouterr().err
    assert code == 2 and "'act'" in err and "GELU" in err and "Traceback" not in err
    assert not (tmp_path / "ws2").exists()  # nothing written


@pytest.mark.parametrize("problem, expect", [
    ("split", "no such node"), ("skip", "above the cut also reads"), ("pickle", "weights_only"),
    ("keys", "does not match"), ("shapes", "does not run on a [3, 32, 32] input"), ("outputs", "--keep")])
def test_refusals_are_one_clear_line(tmp_path, folder, capsys, problem, expect):
    state, _ = vgg_state_dict(outputs=2)
    path, extra, data = tmp_path / "w.pth", ["--input-size", "32"], f"folder:{folder}:cat"
    if problem == "split":
        extra += ["--split", "pool9"]
    if problem == "skip":  # FCN's skips read pool3 and pool4: a cut above them would cross the skips
        state, _ = fcn_state_dict(classes=2, side=32)
        extra += ["--split", "pool4", "--task", "segmentation"]
        data = f"voc:{write_voc(tmp_path / 'VOC', {'train': [8, 12], 'val': [8, 12]})}:cat"
    if problem == "keys":  # a relu has no weights: not torchvision's layout
        state = {**state, "features.1.weight": torch.zeros(8)}
    if problem == "shapes":  # conv1_2 reads 5 channels where conv1_1 writes 8
        state = {**state, "features.2.weight": torch.zeros(8, 5, 3, 3)}
    if problem == "outputs":
        state, _ = vgg_state_dict(outputs=5)
    if problem == "pickle":
        path.write_bytes(pickle.dumps({"features.0.weight": object()}, protocol=2))
    else:
        torch.save(state, path)
    assert _import(tmp_path / "ws", path, data, *extra) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_site_evaluator_feeds_an_imported_net_as_it_was_imported(tmp_path, folder, registry):
    """Evaluate's own bar (the teacher metric) equals the import's: same split, normalisation, [H, W]."""
    from site_agent.client import RegistryClient
    from site_agent.evaluator import SiteEvaluator

    state, _ = vgg_state_dict(outputs=1, seed=3)
    torch.save(state, tmp_path / "vgg.pth")
    assert _import(tmp_path / "ws", tmp_path / "vgg.pth", f"folder:{folder}:cat", "--input-size", "32x64") == 0
    info = load_info(tmp_path / "ws")
    with RegistryClient(registry[0]) as client:
        evaluator = SiteEvaluator(tmp_path / "ws", client)
        assert evaluator.test.images.shape[2:] == (32, 64)
        assert evaluator.teacher_metrics("classification") == pytest.approx(info.teacher_metrics["classification"])
    assert float(evaluator.test.images.min()) < 0  # normalised ((x - mean) / std): raw [0, 1] never goes below 0
