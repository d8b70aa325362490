"""The identity (beta-only) adapter: a control, not a method one would choose on purpose.

It passes the reordered, rescaled features through unchanged. With a channel reorder it shows
what an adapter has to improve on; without one, how close the two nets already are.
"""
from __future__ import annotations

import torch

from transplant.adapter import Adapter
from transplant.methods.base import ClosedFormMethod, register
from transplant.methods.stitching import set_channel_map


@register
class Identity(ClosedFormMethod):
    name = "identity"
    uses_samples = False
    auto_candidate = True  # free to evaluate; if it wins, the other candidates found nothing better


    def solve(self, adapter: Adapter) -> None:
        set_channel_map(adapter, torch.eye(adapter.config.channels))
