"""The samples file: a site's opt-in few-shot set, as one safetensors file.

    images  float32 [N, C, H, W]
    labels  int64   [N]
    masks   int64   [N, H, W]   segmentation sites only

A samples upload carries no module spec; its description (`samples_spec`) travels as metadata.
The registry checks the layout on upload (coordinator.validation); the worker reads it back.
"""
from __future__ import annotations

from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SAMPLES_FORMAT = "transplant.samples.v1"
SAMPLES_TENSORS = ("images", "labels", "masks")


def samples_to_bytes(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None) -> bytes:
    tensors = {"images": images.float().contiguous(), "labels": labels.long().contiguous()}
    if masks is not None:
        tensors["masks"] = masks.long().contiguous()
    return st_save(tensors, metadata={"format": SAMPLES_FORMAT})


def samples_from_bytes(data: bytes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, labels, masks or None); ValueError if `data` is no samples file."""
    try:
        tensors = st_load(data)
        return tensors["images"], tensors["labels"], tensors.get("masks")
    except (SafetensorError, KeyError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not a valid samples file: {exc}") from None


def samples_spec(images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, Any]:
    """The declarative description sent in place of a module spec for a samples upload."""
    return {"format": SAMPLES_FORMAT, "num_samples": len(images), "image_shape": list(images.shape[1:]),
            "has_masks": masks is not None, "positives": int((labels == 1).sum())}


__all__ = ["SAMPLES_FORMAT", "SAMPLES_TENSORS", "samples_from_bytes", "samples_spec", "samples_to_bytes"]
