"""Property tests: random and mutated specs and payloads never crash, hang or slip through the validators.

"Accepted" must mean "safe to build and run": every spec the validator accepts builds a module whose
real output shape is the inferred one; every invalid mutation is refused with a SpecError/WeightsError.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

from transplant.adapter import AdapterConfigError, adapter_from_bytes
from transplant.architectures import teacher_specs, vgg_small
from transplant.spec import (LAYER_TYPES, ModuleSpec, SpecError, WeightsError, build_module, output_shape,
                             parse_spec, weights_from_bytes)

pytestmark = pytest.mark.security
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
BASE = teacher_specs(vgg_small(width=2, depth=3, image_size=16, in_channels=1))
BASE_DOCS = [BASE.category.to_json(), *(s.to_json() for s in BASE.tasks.values())]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.floats(allow_nan=True),
                         st.text(max_size=8), st.sampled_from(list(LAYER_TYPES) + ["input"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=12)


def accepted_specs_run(doc) -> None:
    """The property: rejection is a SpecError; acceptance means the module builds and runs as inferred."""
    try:
        spec = parse_spec(doc)
    except SpecError:
        return
    module = build_module(spec)
    with torch.no_grad():
        out = module(torch.rand(1, *spec.input_shape))
    assert tuple(out.shape[1:]) == output_shape(spec)


@FUZZ
@given(json_values)
def test_random_json_never_crashes_the_spec_validator(doc):
    accepted_specs_run(doc)


@FUZZ
@given(st.sampled_from(range(len(BASE_DOCS))), st.data())
def test_random_field_mutations_are_refused_or_run_as_inferred(which, data):
    doc = copy.deepcopy(BASE_DOCS[which])
    node = data.draw(st.sampled_from(doc["nodes"]))
    field = data.draw(st.sampled_from(["op", "inputs", "attrs", "name", "extra"]))
    node[field] = data.draw(json_values)
    accepted_specs_run(doc)


@FUZZ
@given(st.sampled_from(range(len(BASE_DOCS))), st.data())
def test_random_attribute_values_are_refused_or_run_as_inferred(which, data):
    doc = copy.deepcopy(BASE_DOCS[which])
    candidates = [n for n in doc["nodes"] if n.get("attrs")]
    node = data.draw(st.sampled_from(candidates))
    key = data.draw(st.sampled_from(sorted(node["attrs"])))
    node["attrs"][key] = data.draw(st.one_of(st.integers(-2, 40), json_scalars))
    accepted_specs_run(doc)


INVALID_MUTATIONS = {
    "cycle": lambda d, i: d["nodes"][0].update(inputs=[d["nodes"][-1]["name"]]),
    "dangling input": lambda d, i: d["nodes"][i].update(inputs=["not_a_node"]),
    "unknown op": lambda d, i: d["nodes"][i].update(op="softmax"),
    "duplicate name": lambda d, i: d["nodes"][i].update(name=d["nodes"][(i + 1) % len(d["nodes"])]["name"]),
    "output missing": lambda d, i: d.update(output="nope"),
    "channel mismatch": lambda d, i: [n["attrs"].update(in_channels=n["attrs"]["in_channels"] + 1)
                                      for n in d["nodes"] if n["op"] == "conv2d"][:1],
}


@FUZZ
@given(st.sampled_from(range(len(BASE_DOCS))), st.sampled_from(sorted(INVALID_MUTATIONS)), st.integers(0, 100))
def test_known_invalid_mutations_are_always_refused(which, mutation, index):
    doc = copy.deepcopy(BASE_DOCS[which])
    INVALID_MUTATIONS[mutation](doc, index % len(doc["nodes"]))
    with pytest.raises(SpecError):
        parse_spec(doc)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_never_accepted_as_spec_or_weights(data):
    spec = ModuleSpec.from_json(BASE_DOCS[0])
    with pytest.raises(SpecError):
        ModuleSpec.loads(data)
    with pytest.raises(WeightsError):
        weights_from_bytes(data, spec)


@FUZZ
@given(st.data())
def test_mutated_weight_payloads_are_refused(data):
    spec = ModuleSpec.from_json(BASE_DOCS[0])
    payload = bytearray(st_save(build_module(spec).weights()))
    kind = data.draw(st.sampled_from(["truncate", "flip header", "nan"]))
    if kind == "truncate":
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    elif kind == "flip header":
        header_len = int.from_bytes(payload[:8], "little")
        pos = data.draw(st.integers(8, 8 + header_len - 1))
        payload[pos] = (payload[pos] + data.draw(st.integers(1, 255))) % 256
    else:
        tensors = build_module(spec).weights()
        name = data.draw(st.sampled_from(sorted(tensors)))
        tensors[name].view(-1)[0] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        payload = bytearray(st_save(tensors))
    try:
        tensors = weights_from_bytes(bytes(payload), spec)
    except WeightsError:
        return
    # a header byte flip can still be a valid file (e.g. a digit in the metadata): then it must match the spec
    assert kind == "flip header"
    build_module(spec, tensors)


@FUZZ
@given(json_values, st.binary(max_size=64))
def test_random_adapter_payloads_never_crash(config, weights):
    with pytest.raises(AdapterConfigError):
        adapter_from_bytes(json.dumps(config), weights)
