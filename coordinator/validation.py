"""Upload validation: everything about an uploaded module is checked before anything is stored.

Order matters: header fields and declared size first (cheap, before reading any byte), then the
weights are spooled to a temp file while hashing (bounded memory), then checked tensor by tensor
with safetensors `safe_open` against the declared spec, and scanned for NaN/Inf in bounded pieces.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from transplant.adapter import Adapter, AdapterConfig, AdapterConfigError
from transplant.spec import ModuleSpec, SpecError, parameter_shapes

from common.patterns import MODULE_ROLES as ROLES, NAME  # re-exported
MAX_METADATA_ITEMS, MAX_METADATA_CHARS = 32, 4096
_DTYPES = {"F32": torch.float32, "I64": torch.int64}
FINITE_CHECK_BYTES = 4 << 20  # bytes checked for NaN/Inf at a time


class UploadRejected(Exception):
    """An upload breaks a rule; `quota` marks limits (RESOURCE_EXHAUSTED) vs bad content."""

    def __init__(self, message: str, quota: bool = False) -> None:
        super().__init__(message)
        self.quota = quota


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = 2 << 30   # one module's weights
    site_quota_bytes: int = 20 << 30  # all modules of one site together
    max_samples: int = 1000           # images in a SAMPLES set (few-shot, never a data set)


@dataclass(frozen=True)
class Spooled:
    path: Path
    sha256: str
    size: int


def check_name(what: str, value: str, required: bool = True) -> None:
    if not value and not required:
        return
    if not NAME.match(value or ""):
        raise UploadRejected(f"{what} {value!r} is invalid: use 1-64 letters, digits, '_', '-', '.' "
                             "starting with a letter or digit")


def check_header(header, role: str, limits: UploadLimits, site_used_bytes: int) -> None:
    """Names, role-specific required fields, metadata, declared size, quota."""
    check_name("site id", header.site_id)
    check_name("category", header.category)
    if role not in ROLES:
        raise UploadRejected(f"role must be one of {', '.join(r.upper() for r in ROLES)}")
    check_name("task", header.task, required=role in ("task", "adapter"))
    if role == "category" and header.task:
        raise UploadRejected("a CATEGORY module must not name a task")
    if role == "category" and not (math.isfinite(header.stats.feature_norm_mean)
                                   and header.stats.feature_norm_mean >= 0):
        raise UploadRejected("stats.feature_norm_mean must be a finite number >= 0")
    if not re.fullmatch(r"[0-9a-f]{64}", header.sha256):
        raise UploadRejected("sha256 must be 64 lowercase hex digits")
    _check_metadata(dict(header.metadata))
    if header.size_bytes <= 0:
        raise UploadRejected("size_bytes must be positive")
    if header.size_bytes > limits.max_upload_bytes:
        raise UploadRejected(f"upload of {header.size_bytes} bytes exceeds the per-upload limit of "
                             f"{limits.max_upload_bytes} bytes", quota=True)
    if site_used_bytes + header.size_bytes > limits.site_quota_bytes:
        raise UploadRejected(f"site {header.site_id!r} would use {site_used_bytes + header.size_bytes} "
                             f"bytes, over its quota of {limits.site_quota_bytes} bytes", quota=True)


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > MAX_METADATA_ITEMS or sum(len(k) + len(v) for k, v in metadata.items()) > MAX_METADATA_CHARS:
        raise UploadRejected(f"metadata is limited to {MAX_METADATA_ITEMS} items, {MAX_METADATA_CHARS} characters")


def parse_spec(role: str, spec_json: str) -> ModuleSpec | AdapterConfig | None:
    """The declared architecture; for ADAPTER it is the adapter config, SAMPLES have none."""
    try:
        if role in ("category", "task"):
            return ModuleSpec.loads(spec_json)
        if role == "adapter":
            return AdapterConfig.loads(spec_json)
    except (SpecError, AdapterConfigError) as exc:
        raise UploadRejected(f"invalid spec: {exc}") from None
    if spec_json.strip() not in ("", "{}"):
        raise UploadRejected("a SAMPLES upload carries no spec (spec_json must be empty)")
    return None


def spool(chunks: Iterable[tuple[bytes, int]], out: IO[bytes], path: Path, expected_size: int) -> Spooled:
    """Writes (data, offset) chunks to `out` while hashing; stops as soon as the stream misbehaves."""
    digest, size = hashlib.sha256(), 0
    for data, offset in chunks:
        if offset != size:
            raise UploadRejected(f"chunk at offset {offset} arrived, expected offset {size} "
                                 "(lost or reordered chunk)")
        size += len(data)
        if size > expected_size:
            raise UploadRejected(f"upload is larger than the declared {expected_size} bytes")
        digest.update(data)
        out.write(data)
    out.flush()
    return Spooled(path, digest.hexdigest(), size)


def check_integrity(spooled: Spooled, sha256: str, size: int) -> None:
    if spooled.size != size:
        raise UploadRejected(f"truncated upload: declared {size} bytes, received {spooled.size}")
    if spooled.sha256 != sha256:
        raise UploadRejected(f"sha256 mismatch: declared {sha256}, received {spooled.sha256}")


def expected_tensors(role: str, spec: ModuleSpec | AdapterConfig | None) -> dict[str, tuple[int, ...]] | None:
    """name -> shape, all float32; None for SAMPLES (checked by `_check_samples`)."""
    if isinstance(spec, ModuleSpec):
        return {k: tuple(v) for k, v in parameter_shapes(spec).items()}
    if isinstance(spec, AdapterConfig):
        return {k: tuple(v.shape) for k, v in Adapter(spec).state_dict().items()}
    return None


def check_weights_file(path: Path, role: str, spec: ModuleSpec | AdapterConfig | None,
                       limits: UploadLimits) -> int:
    """Checks the safetensors file; returns the number of samples (0 unless SAMPLES)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            expected = expected_tensors(role, spec)
            if expected is None:
                return _check_samples(handle, limits)
            _check_tensors(handle, expected, _layout(path))
            return 0
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UploadRejected(f"weights are not a valid safetensors file: {exc}") from None


def _tensor_header(handle, name: str) -> tuple[str, tuple[int, ...]]:
    piece = handle.get_slice(name)  # reads only the header: no data loaded yet
    return piece.get_dtype(), tuple(piece.get_shape())


@dataclass(frozen=True)
class _Layout:
    """Where each tensor's bytes lie in a safetensors file (already validated by safe_open)."""

    path: Path
    data_start: int
    data_offsets: dict[str, tuple[int, int]]


def _layout(path: Path) -> _Layout:
    with open(path, "rb") as data:
        header_len = int.from_bytes(data.read(8), "little")
        header = json.loads(data.read(header_len))
    offsets = {k: tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__"}
    return _Layout(path, 8 + header_len, offsets)


def _check_tensors(handle, expected: dict[str, tuple[int, ...]], offsets: _Layout) -> None:
    names = set(handle.keys())
    if missing := sorted(set(expected) - names):
        raise UploadRejected(f"weights miss tensor(s) {missing[:5]}")
    if extra := sorted(names - set(expected)):
        raise UploadRejected(f"weights hold unexpected tensor(s) {extra[:5]}")
    for name, shape in expected.items():
        dtype, actual = _tensor_header(handle, name)
        if actual != shape:
            raise UploadRejected(f"tensor '{name}' has shape {list(actual)}, the spec says {list(shape)}")
        if dtype != "F32":
            raise UploadRejected(f"tensor '{name}' has dtype {dtype}, expected F32 (float32)")
        if not _all_finite(offsets, name, shape):
            raise UploadRejected(f"tensor '{name}' holds NaN or Inf values")


def _all_finite(handle: _Layout, name: str, shape: tuple[int, ...]) -> bool:
    """Scanned straight from the file in bounded pieces with numpy (fast, and memory stays bounded)."""
    begin, end = handle.data_offsets[name]
    with open(handle.path, "rb") as data:
        data.seek(handle.data_start + begin)
        remaining = end - begin
        while remaining > 0:
            piece = data.read(min(remaining, FINITE_CHECK_BYTES))
            if len(piece) % 4 or not piece:
                return False
            if not np.isfinite(np.frombuffer(piece, dtype="<f4")).all():
                return False
            remaining -= len(piece)
    return True


def _check_samples(handle, limits: UploadLimits) -> int:
    names = set(handle.keys())
    if not {"images", "labels"} <= names or names - {"images", "labels", "masks"}:
        raise UploadRejected(f"a SAMPLES file holds exactly images, labels and optionally masks; got {sorted(names)}")
    headers = {name: _tensor_header(handle, name) for name in names}
    (img_dtype, img), (lab_dtype, lab) = headers["images"], headers["labels"]
    if img_dtype != "F32" or len(img) != 4:
        raise UploadRejected(f"images must be float32 [N,C,H,W], got {img_dtype} {list(img)}")
    n = img[0]
    if lab_dtype != "I64" or lab != (n,):
        raise UploadRejected(f"labels must be int64 [{n}], got {lab_dtype} {list(lab)}")
    if not 1 <= n <= limits.max_samples:
        raise UploadRejected(f"a SAMPLES set holds 1..{limits.max_samples} images, got {n}")
    if "masks" in headers and headers["masks"] != ("I64", (n, img[2], img[3])):
        raise UploadRejected(f"masks must be int64 [{n},{img[2]},{img[3]}], got {list(headers['masks'][1])}")
    if not torch.isfinite(handle.get_tensor("images")).all():
        raise UploadRejected("images hold NaN or Inf values")
    for name in names - {"images"}:
        if (handle.get_tensor(name) < 0).any():
            raise UploadRejected(f"{name} must be >= 0")
    return n

