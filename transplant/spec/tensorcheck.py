"""The one check of weight tensors, for every reader: the registry on upload, workers, sites, the library.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
data_offsets) and the tensors' bytes back to back. `parse_header` checks the header as strictly as the
safetensors library does (offsets contiguous from 0 to the end of the file, each tensor's byte count
matching its dtype and shape) without reading any tensor data; `check_declared` compares names, shapes
and dtypes with what a spec expects; `StreamCheck` scans the data for NaN/Inf (float32) or negative
values (int64 labels) as bytes arrive, in pieces of any size, so an upload is checked in the same pass
that hashes and stores it. In-memory tensors go through the same rules (`check_table`, `all_finite`).
Only numpy and json: no torch needed to check bytes.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 1 << 20  # a module's header lists a few dozen tensors: far below this
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
FINITE, NONNEGATIVE = "finite", "nonnegative"  # what a scan asks of a tensor's values
_SCAN_DTYPES = {FINITE: ("F32", "<f4"), NONNEGATIVE: ("I64", "<i8")}
Shape = tuple[int, ...]


class WeightsError(ValueError):
    """Weights do not match their spec (names, shapes, dtypes), hold NaN/Inf, or are no safetensors file."""


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: Shape
    begin: int  # byte offsets within the data section
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, Tensor]
    data_start: int  # 8 + header length: where the data section begins in the file

    def table(self) -> dict[str, tuple[str, Shape]]:
        return {t.name: (t.dtype, t.shape) for t in self.tensors.values()}


def _bad(why: str) -> WeightsError:
    return WeightsError(f"weights are not a valid safetensors file: {why}")


def header_length(prefix: bytes | bytearray, total_size: int) -> int:
    """The JSON header's length from the first 8 bytes; WeightsError if it cannot fit the file."""
    if total_size < 8 or len(prefix) < 8:
        raise _bad("shorter than its header")
    size = int.from_bytes(prefix[:8], "little")
    if size > min(MAX_HEADER_BYTES, total_size - 8):
        raise _bad(f"header of {size} bytes")
    return size


def parse_header(data: bytes | bytearray, total_size: int | None = None) -> Header:
    """The header of a safetensors file of `total_size` bytes (default: len(data)) starting with `data`."""
    total = len(data) if total_size is None else total_size
    size = header_length(data, total)
    if len(data) < 8 + size:
        raise _bad("shorter than its header")
    raw = bytes(data[8:8 + size])
    if not raw.startswith(b"{"):
        raise _bad("the header is not a JSON object")
    try:
        doc = json.loads(raw, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"bad header ({exc})") from None
    tensors = {name: _entry(name, value) for name, value in doc.items() if name != "__metadata__"}
    _check_metadata(doc.get("__metadata__"))
    _check_contiguous(tensors, total - 8 - size)
    return Header(tensors, 8 + size)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in the header")
    return dict(pairs)


def _entry(name: str, value: object) -> Tensor:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise _bad(f"tensor '{name}' needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise _bad(f"tensor '{name}' has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _bad(f"tensor '{name}' has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise _bad(f"tensor '{name}' has bad data_offsets {offsets!r}")
    if math.prod(shape) * DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
        raise _bad(f"tensor '{name}' declares {offsets[1] - offsets[0]} bytes for {dtype} {shape}")
    return Tensor(name, dtype, tuple(shape), offsets[0], offsets[1])


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_metadata(metadata: object) -> None:
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise _bad("__metadata__ must map strings to strings")


def _check_contiguous(tensors: Mapping[str, Tensor], data_size: int) -> None:
    position = 0
    for tensor in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if tensor.begin != position:
            raise _bad(f"tensor '{tensor.name}' starts at byte {tensor.begin}, expected {position}")
        position = tensor.end
    if position != data_size:
        raise _bad(f"the tensors cover {position} bytes of a {data_size}-byte data section")


def check_table(expected: Mapping[str, Shape], declared: Mapping[str, tuple[str, Shape]], dtype: str = "F32",
                what: str = "tensor") -> None:
    """Exactly the expected names, each of `expected`'s shape and of `dtype`."""
    missing, extra = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
    if missing:
        raise WeightsError(f"weights miss {what}(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        raise WeightsError(f"weights hold unexpected {what}(s) {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for name, shape in expected.items():
        actual_dtype, actual = declared[name]
        if tuple(actual) != tuple(shape):
            raise WeightsError(f"{what} '{name}' has shape {list(actual)}, the spec says {list(shape)}")
        if actual_dtype != dtype:
            raise WeightsError(f"{what} '{name}' has dtype {actual_dtype}, expected {dtype}"
                               + (" (float32)" if dtype == "F32" else ""))


def check_tensors(expected: Mapping[str, Shape], tensors: Mapping[str, Any], what: str = "tensor") -> None:
    """The same rules for tensors already in memory (torch or numpy): names, shapes, float32, finite."""
    check_table(expected, {name: ("F32" if str(t.dtype) in ("torch.float32", "float32") else str(t.dtype),
                                  tuple(t.shape)) for name, t in tensors.items()}, what=what)
    for name, tensor in tensors.items():
        values = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
        check_values(name, FINITE, values, what)


def all_finite(values: np.ndarray) -> bool:
    """No NaN, no Inf. min and max propagate NaN and show +-Inf: two vectorised passes, no temporaries."""
    return values.size == 0 or bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def _scan_ok(kind: str, values: np.ndarray) -> bool:
    return all_finite(values) if kind == FINITE else values.size == 0 or int(values.min()) >= 0


def check_values(name: str, kind: str, values: np.ndarray, what: str = "tensor") -> None:
    if not _scan_ok(kind, values):
        raise WeightsError(f"{what} '{name}' holds NaN or Inf values" if kind == FINITE
                           else f"{name} must be >= 0")


Rules = Callable[[Header], Mapping[str, str]]  # checks a header; returns name -> scan kind for the data


def expect_float32(expected: Mapping[str, Shape]) -> Rules:
    """The rules for module and adapter weights: exactly these float32 tensors, every value finite."""
    def rules(header: Header) -> Mapping[str, str]:
        check_table(expected, header.table())
        return dict.fromkeys(expected, FINITE)
    return rules


class StreamCheck:
    """Checks a safetensors file of `total_size` bytes fed in pieces of any size, in one pass.

    The header is checked by `rules` as soon as it has arrived (a wrong name or shape fails before any
    data is received); the data is then scanned as it passes, with at most one element carried over a
    piece boundary. `finish()` after the last piece returns the header."""

    def __init__(self, total_size: int, rules: Rules) -> None:
        self.total_size, self.rules = total_size, rules
        self._head = bytearray()      # bytes until the header is complete
        self._header: Header | None = None
        self._plan: list[tuple[Tensor, str | None]] = []
        self._index = 0               # the tensor the next data byte belongs to
        self._position = 0            # bytes of the data section seen
        self._carry = b""             # a partial element at a piece boundary

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._header is None:
            view = self._feed_head(view)
            if self._header is None:
                return
        while len(view):
            if self._index >= len(self._plan):
                raise _bad("more bytes than its header declares")
            tensor, kind = self._plan[self._index]
            take = min(len(view), tensor.end - self._position)
            if kind is not None:
                self._scan(tensor, kind, view[:take])
            view, self._position = view[take:], self._position + take
            if self._position == tensor.end:
                self._index += 1

    def _feed_head(self, view: memoryview) -> memoryview:
        """Collects the length, then the JSON header; returns what is left of `view` for the data."""
        if len(self._head) < 8:
            take = min(len(view), 8 - len(self._head))
            self._head += view[:take]
            view = view[take:]
            if len(self._head) < 8:
                return view
        need = 8 + header_length(self._head, self.total_size)
        take = min(len(view), need - len(self._head))
        self._head += view[:take]
        view = view[take:]
        if len(self._head) < need:
            return view
        header = parse_header(self._head, self.total_size)
        kinds = self.rules(header)
        self._header, self._head = header, bytearray()
        self._plan = [(t, kinds.get(t.name)) for t in sorted(header.tensors.values(), key=lambda t: t.begin)
                      if t.end > t.begin]
        return view

    def _scan(self, tensor: Tensor, kind: str, piece: memoryview) -> None:
        dtype, numpy_dtype = _SCAN_DTYPES[kind]
        if tensor.dtype != dtype:
            raise WeightsError(f"tensor '{tensor.name}' has dtype {tensor.dtype}, expected {dtype}")
        size = DTYPE_BYTES[dtype]
        if self._carry:
            fill = min(size - len(self._carry), len(piece))
            self._carry += bytes(piece[:fill])
            piece = piece[fill:]
            if len(self._carry) < size:
                return
            check_values(tensor.name, kind, np.frombuffer(self._carry, dtype=numpy_dtype))
            self._carry = b""
        whole = len(piece) - len(piece) % size
        check_values(tensor.name, kind, np.frombuffer(piece[:whole], dtype=numpy_dtype))
        self._carry = bytes(piece[whole:])

    def finish(self) -> Header:
        if self._header is None or self._index < len(self._plan):
            raise _bad("shorter than its header declares")
        return self._header


def check_bytes(data: bytes | bytearray, rules: Rules) -> Header:
    """The whole check on bytes already in memory (one pass, no copy)."""
    check = StreamCheck(len(data), rules)
    check.feed(data)
    return check.finish()


__all__ = ["DTYPE_BYTES", "FINITE", "MAX_HEADER_BYTES", "NONNEGATIVE", "Header", "StreamCheck", "Tensor",
           "Rules", "WeightsError", "all_finite", "check_bytes", "check_table", "check_tensors", "check_values", "expect_float32",
           "header_length", "parse_header"]
