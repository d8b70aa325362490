"""Data-free stitching: least squares h(f(P)) ~ f_S(P) on the coordinator's probe images P.

No image of any site is used: the probes are procedural (`transplant.probes`). It works where
both category modules compute generic low-level features, which is what the paper's cut after
pool1 gives; `benchmarks/results/paper.md` measures where it holds.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import ClosedFormMethod, register
from transplant.methods.stitching import fit_stitch
from transplant.probes import probes_for

PROBES = 512
CHUNK = 128


@register
class ProbeStitch(ClosedFormMethod):
    name = "probe_stitch"
    needs_generic_category_module = True
    uses_samples = False
    auto_candidate = True


    @torch.no_grad()
    def solve(self, adapter: Adapter) -> None:
        f, f_s = self.problem.category_module, self.problem.generic_category_module
        if f_s is None:
            raise ValueError("probe_stitch needs the generic net's category module")
        if tuple(f.spec.input_shape) != tuple(f_s.spec.input_shape):
            raise ValueError(f"probe_stitch needs category modules with one input shape, got "
                             f"{list(f.spec.input_shape)} and {list(f_s.spec.input_shape)}")
        device = next(f.parameters()).device
        # one set of images, each module fed it as its own site normalises its data (metadata.preprocess)
        source = torch.cat([f(p) for p in probes_for(f.spec, PROBES, self.config.seed).to(device).split(CHUNK)])
        target = torch.cat([f_s(p) for p in probes_for(f_s.spec, PROBES, self.config.seed).to(device).split(CHUNK)])
        self.residual = fit_stitch(adapter, source, target)
