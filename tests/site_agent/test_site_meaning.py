"""A trained workspace records how the site feeds its net and what each task module outputs."""
from __future__ import annotations

from site_agent.workspace import load_info, load_spec_module
from transplant.spec.schema import output_of, preprocess_of


def test_trained_workspace_carries_preprocessing_and_output_meaning(seg_workspace):
    info = load_info(seg_workspace)
    category = load_spec_module(seg_workspace).spec
    channels = category.input_shape[0]
    assert category.metadata["preprocess"] == {"channels": channels, "size": [info.size, info.size],
                                               "resize": "bilinear", "divide": 255.0,
                                               "mean": [0.0] * channels, "std": [1.0] * channels}
    assert preprocess_of(category) == category.metadata["preprocess"]
    seg = load_spec_module(seg_workspace, "segmentation").spec
    assert seg.metadata["output"] == {"kind": "segmentation", "classes": ["background", info.category],
                                      "mask": "argmax"}
    cls = output_of(load_spec_module(seg_workspace, "classification").spec)
    assert cls["classes"] == [f"not {info.category}", info.category] and cls["threshold"] == 0.0
