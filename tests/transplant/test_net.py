"""Split, join and the growing TransplantNet: adding a category changes nothing already there."""
from __future__ import annotations

import pytest
import torch

from transplant.adapter import Adapter, AdapterConfig
from transplant.architectures import CLASSIFICATION, teacher_specs, vgg_small
from transplant.job import JobConfig, make_problem, run_job
from transplant.net import TransplantNet, join, split_spec
from transplant.spec import SpecError, build_module
from transplant.spec.builder import SpecBuilder

from tests.helpers.modules import state_hash


def whole_net_spec():
    b = SpecBuilder("whole", (1, 8, 8))
    b.conv_relu("conv1_1", 4)
    b.add("pool1", "maxpool2d", kernel_size=2)
    b.conv_relu("conv2_1", 4)
    b.add("flatten", "flatten")
    b.add("fc", "linear", in_features=64, out_features=1)
    return b.build()


def test_split_spec_cuts_after_the_named_node_and_joins_back():
    whole = whole_net_spec()
    lower, upper = split_spec(whole, "pool1")
    assert [n.name for n in lower.nodes] == ["conv1_1", "relu1_1", "pool1"]
    assert upper.input_shape == (4, 4, 4) and upper.nodes[0].inputs == ("input",)
    full = build_module(whole)
    weights = full.weights()
    category = build_module(lower, {k: v for k, v in weights.items() if k.startswith("conv1_1")})
    task = build_module(upper, {k: v for k, v in weights.items() if not k.startswith("conv1_1")})
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(join(category, task)(x), full(x))


def test_split_refuses_a_cut_that_leaks():
    b = SpecBuilder("skip", (1, 8, 8))
    b.add("conv", "conv2d", in_channels=1, out_channels=1, kernel_size=3, padding=1)
    b.add("relu", "relu")
    b.add("sum", "add", "relu", "conv")
    with pytest.raises(SpecError, match="also reads"):
        split_spec(b.build(), "relu")
    with pytest.raises(SpecError, match="no such node"):
        split_spec(b.build(), "nope")


def test_adding_a_category_never_changes_existing_modules_bit_for_bit(digits_teacher, second_digits_teacher,
                                                                     tmp_path):
    generic, _, _ = digits_teacher
    newcomer, data = second_digits_teacher
    net = TransplantNet()
    net.add_category("digit3", generic.category)
    net.add_task(CLASSIFICATION, generic.task_module(CLASSIFICATION), native_category="digit3")
    before = state_hash(net)
    x = data.test.images[:8]
    out_before = net(x, "digit3", CLASSIFICATION)

    config = JobConfig.create(task=CLASSIFICATION, adapter_layers=1, kernel_size=1, steps=30)
    problem = make_problem(config, newcomer.category, newcomer.task_module(CLASSIFICATION),
                           net.tasks[CLASSIFICATION], beta=1.0)
    adapter = run_job(config, problem).adapter  # learning touches only the adapter
    net.add_category("digit5", newcomer.category)
    net.add_adapter("digit5", CLASSIFICATION, adapter)

    after = state_hash(net)
    assert all(after[k] == v for k, v in before.items())
    assert torch.equal(net(x, "digit3", CLASSIFICATION), out_before)
    assert net(x, "digit5", CLASSIFICATION).shape == (8, 1)
    with pytest.raises(ValueError, match="never replaced"):
        net.add_category("digit3", newcomer.category)
    with pytest.raises(ValueError, match="already in the net"):
        net.add_adapter("digit5", CLASSIFICATION, adapter)
    with pytest.raises(KeyError, match="does not serve"):
        net(x, "digit5", "segmentation")

    loaded = TransplantNet.load(net.save(tmp_path / "net"))
    assert torch.equal(loaded(x, "digit5", CLASSIFICATION), net(x, "digit5", CLASSIFICATION))
    assert sorted(loaded.routes) == sorted(net.routes)


def test_invalid_names_are_refused():
    net = TransplantNet()
    spec = teacher_specs(vgg_small(width=4, depth=3, image_size=16, in_channels=1), (CLASSIFICATION,)).category
    with pytest.raises(ValueError, match="invalid module name"):
        net.add_category("a.b", build_module(spec))
    with pytest.raises(KeyError, match="no category module"):
        net.add_adapter("ghost", CLASSIFICATION, Adapter(AdapterConfig(channels=4)))
