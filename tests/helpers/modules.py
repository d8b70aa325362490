"""Helpers shared by tests that check modules are left untouched."""
from __future__ import annotations

import torch


def state_hash(module: torch.nn.Module) -> dict[str, bytes]:
    """Every tensor's bytes: equal dicts mean bit-for-bit equal weights."""
    return {k: v.detach().cpu().numpy().tobytes() for k, v in module.state_dict().items()}
