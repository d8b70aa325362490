"""The paper's nets as specs, split where the paper splits, and torchvision weights mapped onto them."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from transplant.architectures import (CLASSIFICATION, SEGMENTATION, VGG16, load_torchvision_vgg, teacher_specs,
                                      torchvision_vgg_names, vgg_small)
from transplant.spec import SpecError, build_module, output_shape, parameter_count


def test_vgg16_and_fcn8s_specs_are_split_after_pool1():
    specs = teacher_specs(dataclasses.replace(VGG16, num_outputs=1000))
    assert [n.name for n in specs.category.nodes] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert output_shape(specs.category) == (64, 112, 112)
    total = parameter_count(specs.category) + parameter_count(specs.tasks[CLASSIFICATION])
    assert total == 138_357_544  # torchvision's VGG-16
    seg = specs.tasks[SEGMENTATION]
    assert output_shape(seg) == (2, 224, 224)
    names = {n.name for n in seg.nodes}
    assert {"score_pool4", "score_pool3", "fuse_pool4", "fuse_pool3", "crop_a", "upscore_final"} <= names


def torchvision_like_state(cfg):
    """A state_dict with torchvision's key layout for a VGG family (random values)."""
    specs = teacher_specs(cfg, (CLASSIFICATION,))
    ours = {**build_module(specs.category).weights(), **build_module(specs.tasks[CLASSIFICATION]).weights()}
    return {f"{tv}.{p}": ours[f"{node}.{p}"] for tv, node in torchvision_vgg_names(cfg).items()
            for p in ("weight", "bias")}, specs


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "dict"])
def test_torchvision_state_dict_maps_onto_the_spec(fmt, tmp_path):
    cfg = vgg_small(width=4, depth=3, image_size=16, in_channels=3)
    state, specs = torchvision_like_state(cfg)
    assert "features.0.weight" in state and "classifier.6.weight" in state
    source = state
    if fmt == "pth":
        source = tmp_path / "vgg.pth"
        torch.save(state, source)
    elif fmt == "safetensors":
        source = tmp_path / "vgg.safetensors"
        save_file(state, str(source))
    category, task = load_torchvision_vgg(source, cfg)
    assert set(category) == {"conv1_1.weight", "conv1_1.bias", "conv1_2.weight", "conv1_2.bias"}
    assert torch.equal(category["conv1_1.weight"], state["features.0.weight"])
    assert torch.equal(task["fc8.weight"], state["classifier.6.weight"])
    build_module(specs.category, category)
    build_module(specs.tasks[CLASSIFICATION], task)


def test_torchvision_names_of_vgg16():
    names = torchvision_vgg_names(VGG16)
    assert names["features.28"] == "conv5_3" and names["features.5"] == "conv2_1"
    assert names["classifier.3"] == "fc7"


def test_missing_torchvision_key_is_a_clear_error():
    cfg = vgg_small(width=4, depth=3, image_size=16)
    state, _ = torchvision_like_state(cfg)
    del state["features.5.bias"]
    with pytest.raises(SpecError, match="features.5.bias"):
        load_torchvision_vgg(state, cfg)


def test_small_family_shapes():
    cfg = vgg_small(width=8, depth=4, image_size=32, in_channels=3)
    specs = teacher_specs(cfg)
    assert output_shape(specs.tasks[CLASSIFICATION]) == (1,)
    assert output_shape(specs.tasks[SEGMENTATION]) == (2, 32, 32)
    with pytest.raises(SpecError, match="divisible"):
        vgg_small(depth=4, image_size=24)
