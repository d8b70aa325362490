"""transplant.spec.tensorcheck, the one weights check: fed in pieces of any size it agrees with the
safetensors library and with a plain torch scan, wherever the NaN/Inf or the piece boundary lies."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from transplant.spec.tensorcheck import (FINITE, NONNEGATIVE, StreamCheck, WeightsError, check_bytes,
                                         expect_float32, parse_header)

SHAPES = {"a.weight": (3, 5), "a.bias": (3,), "b.weight": (7, 1, 2)}


def pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, start = [], 0
    for size in sizes:
        out.append(data[start:start + size])
        start += size
    return out + [data[start:]] if start < len(data) else out


def stream(data: bytes, sizes: list[int], rules=expect_float32(SHAPES)) -> None:
    check = StreamCheck(len(data), rules)
    for piece in pieces(data, sizes):
        check.feed(piece)
    check.finish()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 40), max_size=30), bad=st.none() | st.tuples(
    st.sampled_from(sorted(SHAPES)), st.integers(0, 100), st.sampled_from([float("nan"), float("inf"), -float("inf")])))
def test_any_piece_sizes_find_exactly_the_bad_values(sizes, bad) -> None:
    tensors = {name: torch.randn(*shape) for name, shape in SHAPES.items()}
    if bad is not None:
        name, index, value = bad
        tensors[name].view(-1)[index % tensors[name].numel()] = value
    data = st_save(tensors)
    if bad is None:
        stream(data, sizes)
        assert parse_header(data).table() == {n: ("F32", s) for n, s in SHAPES.items()}
    else:
        with pytest.raises(WeightsError, match=f"'{bad[0]}' holds NaN or Inf"):
            stream(data, sizes)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(position=st.integers(0, 400), value=st.integers(0, 255))
def test_a_corrupted_byte_is_refused_or_is_what_safetensors_reads(position, value) -> None:
    data = bytearray(st_save({name: torch.randn(*shape) for name, shape in SHAPES.items()}))
    data[position % len(data)] = value
    try:
        check_bytes(bytes(data), expect_float32(SHAPES))
    except WeightsError:
        return
    tensors = st_load(bytes(data))  # accepted: the library reads the same tensors, all finite
    assert {k: tuple(v.shape) for k, v in tensors.items()} == SHAPES
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_names_shapes_dtypes_and_sizes_are_checked_from_the_header() -> None:
    good = {name: torch.zeros(*shape) for name, shape in SHAPES.items()}
    cases = [({**good, "extra": torch.zeros(1)}, "unexpected"), ({k: v for k, v in good.items() if k != "a.bias"},
             "miss"), ({**good, "a.bias": torch.zeros(4)}, "has shape"),
             ({**good, "a.bias": torch.zeros(3, dtype=torch.float64)}, "has dtype F64")]
    for tensors, message in cases:
        with pytest.raises(WeightsError, match=message):
            check_bytes(st_save(tensors), expect_float32(SHAPES))
    data = st_save(good)
    for broken in (data[:-1], data + b"\0", data[:7], b"\xff" * 8 + data[8:]):
        with pytest.raises(WeightsError, match="not a valid safetensors file"):
            check_bytes(broken, expect_float32(SHAPES))


def test_integer_labels_are_scanned_for_negative_values() -> None:
    def rules(header):
        return {"labels": NONNEGATIVE, "images": FINITE}
    data = st_save({"images": torch.zeros(2, 1, 2, 2), "labels": torch.tensor([0, -1])})
    with pytest.raises(WeightsError, match="labels must be >= 0"):
        stream(data, [3, 5, 9], rules)
    stream(st_save({"images": torch.zeros(2, 1, 2, 2), "labels": torch.tensor([0, 1])}), [3, 5, 9], rules)
