"""Probe images reach each category module as its site feeds its data: an imported net's normalisation
(metadata.preprocess mean/std, e.g. ImageNet's) applies, a net without one gets the images in [0, 1]."""
from __future__ import annotations

import torch

from transplant.architectures import teacher_specs, vgg_small
from transplant.probes import probe_images, probes_for
from transplant.spec import ModuleSpec
from transplant.spec.schema import PREPROCESS

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_probes_follow_the_modules_normalisation():
    plain = teacher_specs(vgg_small(width=4, depth=3, image_size=16), ("classification",)).category
    prep = {"channels": 3, "size": [16, 16], "resize": "bilinear", "divide": 255.0, "mean": MEAN, "std": STD}
    imported = ModuleSpec.from_json({**plain.to_json(), "metadata": {**plain.metadata, PREPROCESS: prep}})
    raw = probe_images(6, (3, 16, 16), seed=3)
    assert torch.equal(probes_for(plain, 6, seed=3), raw)
    expected = (raw - torch.tensor(MEAN).reshape(1, 3, 1, 1)) / torch.tensor(STD).reshape(1, 3, 1, 1)
    torch.testing.assert_close(probes_for(imported, 6, seed=3), expected)
