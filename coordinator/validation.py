"""Upload validation: everything about an uploaded module is checked before anything is stored.

Order matters: header fields and declared size first (cheap, before reading any byte); then, in one
pass as the chunks arrive (coordinator.ingest), the bytes are hashed, checked by transplant's one
tensor check (the safetensors header against the declared spec as soon as it is in, then every value
for NaN/Inf) and written to the store, where they become visible only once all of it passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coordinator.store import BlobInfo
from transplant.adapter import AdapterConfig, AdapterConfigError
from transplant.adapter.io import expected_shapes
from transplant.net import MODULE_NAME_RULE, valid_module_name
from transplant.spec import ModuleSpec, SpecError, parameter_shapes
from transplant.spec.tensorcheck import (FINITE, NONNEGATIVE, Header, Rules, StreamCheck, WeightsError,
                                         expect_float32)

from common.patterns import MODULE_ROLES as ROLES, NAME, SHA256_HEX  # NAME re-exported
MAX_METADATA_ITEMS, MAX_METADATA_CHARS = 32, 4096


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


def check_name(what: str, value: str, required: bool = True) -> None:
    if not value and not required:
        return
    if not NAME.match(value or ""):
        raise UploadRejected(f"{what} {value!r} is invalid: use 1-64 letters, digits, '_', '-', '.' "
                             "starting with a letter or digit")


def check_module_name(what: str, value: str, required: bool = True) -> None:
    """Categories and tasks also name modules of a transplant net: the narrower rule, checked here so a
    name a net cannot hold is refused at upload rather than when the net is downloaded."""
    check_name(what, value, required)
    if value and not valid_module_name(value):
        raise UploadRejected(f"{what} {value!r} is invalid: {MODULE_NAME_RULE}")


def check_header(header, role: str, limits: UploadLimits, site_used_bytes: int) -> None:
    """Names, role-specific required fields, metadata, declared size, quota."""
    check_name("site id", header.site_id)
    check_module_name("category", header.category)
    if role not in ROLES:
        raise UploadRejected(f"role must be one of {', '.join(r.upper() for r in ROLES)}")
    check_module_name("task", header.task, required=role in ("task", "adapter"))
    if role == "category" and header.task:
        raise UploadRejected("a CATEGORY module must not name a task")
    if role == "category" and not (math.isfinite(header.stats.feature_norm_mean)
                                   and header.stats.feature_norm_mean >= 0):
        raise UploadRejected("stats.feature_norm_mean must be a finite number >= 0")
    if not SHA256_HEX.match(header.sha256):
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


def check_integrity(received: BlobInfo, sha256: str, size: int) -> None:
    if received.size != size:
        raise UploadRejected(f"truncated upload: declared {size} bytes, received {received.size}")
    if received.sha256 != sha256:
        raise UploadRejected(f"sha256 mismatch: declared {sha256}, received {received.sha256}")


def expected_tensors(role: str, spec: ModuleSpec | AdapterConfig | None) -> dict[str, tuple[int, ...]] | None:
    """name -> shape, all float32; None for SAMPLES (checked by `_samples_rules`)."""
    if isinstance(spec, ModuleSpec):
        return {k: tuple(v) for k, v in parameter_shapes(spec).items()}
    if isinstance(spec, AdapterConfig):
        return {k: tuple(v) for k, v in expected_shapes(spec).items()}
    return None


def weights_check(role: str, spec: ModuleSpec | AdapterConfig | None, limits: UploadLimits,
                  size: int) -> StreamCheck:
    """The one tensor check (transplant.spec.tensorcheck) for an upload of `size` bytes, fed as they arrive:
    the header against the spec as soon as it is in, then every value; failures raise WeightsError."""
    expected = expected_tensors(role, spec)
    return StreamCheck(size, _samples_rules(limits) if expected is None else expect_float32(expected))


def _samples_rules(limits: UploadLimits) -> Rules:
    def rules(header: Header) -> dict[str, str]:
        table = header.table()
        names = set(table)
        if not {"images", "labels"} <= names or names - {"images", "labels", "masks"}:
            raise WeightsError("a SAMPLES file holds exactly images, labels and optionally masks; "
                               f"got {sorted(names)}")
        (img_dtype, img), (lab_dtype, lab) = table["images"], table["labels"]
        if img_dtype != "F32" or len(img) != 4:
            raise WeightsError(f"images must be float32 [N,C,H,W], got {img_dtype} {list(img)}")
        n = img[0]
        if lab_dtype != "I64" or lab != (n,):
            raise WeightsError(f"labels must be int64 [{n}], got {lab_dtype} {list(lab)}")
        if not 1 <= n <= limits.max_samples:
            raise WeightsError(f"a SAMPLES set holds 1..{limits.max_samples} images, got {n}")
        if "masks" in table and table["masks"] != ("I64", (n, img[2], img[3])):
            raise WeightsError(f"masks must be int64 [{n},{img[2]},{img[3]}], got {list(table['masks'][1])}")
        return {"images": FINITE, "labels": NONNEGATIVE, "masks": NONNEGATIVE}
    return rules


def samples_count(role: str, header: Header) -> int:
    """Images in a SAMPLES upload (0 for every other role)."""
    return header.tensors["images"].shape[0] if role == "samples" else 0
