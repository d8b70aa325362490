"""Least-squares feature stitching on the samples: fit the adapter (as a 1x1 map) so that
h(f(I)) ~ f_S(I) on the sample images, in closed form; deeper layers start as identity.

It needs images of the new category and the generic net's own category module f_S.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import ClosedFormMethod, register
from transplant.methods.stitching import fit_stitch


@register
class LstsqStitch(ClosedFormMethod):
    name = "lstsq"
    needs_samples = True
    needs_generic_category_module = True
    auto_candidate = True


    @torch.no_grad()
    def solve(self, adapter: Adapter) -> None:
        if self.problem.generic_category_module is None:
            raise ValueError("lstsq stitching needs the generic net's category module")
        samples, features = self.labelled()
        fit_stitch(adapter, features, self.problem.generic_category_module(samples.images))
