"""Hypothesis strategies for any protobuf request, read from its descriptor, and the property every answer
must have: a deliberate status code with a message meant for people, never UNKNOWN/INTERNAL or Python's
own words leaking out of a servicer."""

from __future__ import annotations

import re

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
NASTY = ["", " ", ".", "..", "../x", "a/b", "site-a", "3", "classification", "segmentation", "x" * 70,
         "x" * 5000, "\x00", "é", "job-", "job-0", "coordinator", "{}", "[]", "null", "{\"a\":" * 50,
         "1e309", "-1", "NaN", "\ud7ff", "a\nb", "%s%s", "' OR 1=1 --", "back_distill", "auto", "lstsq"]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([2 ** 31 - 1, -(2 ** 31), 2 ** 16, 10 ** 9]))
UINTS = st.one_of(st.integers(0, 40), st.sampled_from([2 ** 32 - 1, 2 ** 31, 10 ** 9]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e38]))
# what a servicer must never let through: tracebacks, exception reprs, interpreter messages
PYTHON_WORDS = re.compile(r"Traceback|File \"|line \d+, in|Error\(|Exception\(|object has no attribute|"
                          r"unexpected keyword|positional argument|NoneType|recursion depth|"
                          r"invalid literal for|not subscriptable|not iterable|KeyError|IndexError|TypeError")
BAD_CODES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    t = field.type
    if t == F.TYPE_STRING:
        return st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
    if t == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00" * 1024, b"{}"]))
    if t == F.TYPE_BOOL:
        return st.booleans()
    if t in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return FLOATS
    if t == F.TYPE_ENUM:  # proto3 enums are open: values the enum does not name arrive too
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-2, 50))
    if t in (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_FIXED32, F.TYPE_FIXED64):
        return UINTS
    return INTS


def messages(descriptor: Descriptor, cls: type[Message], depth: int = 3,
             overrides: dict[str, st.SearchStrategy] | None = None) -> st.SearchStrategy:
    """Messages of `cls` with any subset of fields set (nested messages up to `depth`)."""
    overrides = overrides or {}
    fields: dict[str, st.SearchStrategy] = {}
    for field in descriptor.fields:
        if field.name in overrides:
            fields[field.name] = overrides[field.name]
            continue
        if field.type == F.TYPE_MESSAGE:
            if depth <= 0 or field.message_type.GetOptions().map_entry:
                continue
            sub = messages(field.message_type, field.message_type._concrete_class, depth - 1)
        else:
            sub = _scalar(field)
        fields[field.name] = st.lists(sub, max_size=3) if field.is_repeated else sub

    @st.composite
    def build(draw) -> Message:
        msg = cls()
        for name, strategy in fields.items():
            if not draw(st.booleans()):
                continue
            value = draw(strategy)
            field = descriptor.fields_by_name[name]
            try:
                if field.is_repeated:
                    target = getattr(msg, name)
                    if field.type == F.TYPE_MESSAGE:
                        for item in value:
                            target.add().CopyFrom(item)
                    else:
                        target.extend(value)
                elif field.type == F.TYPE_MESSAGE:
                    getattr(msg, name).CopyFrom(value)
                else:
                    setattr(msg, name, value)
            except (ValueError, TypeError):  # e.g. a surrogate the wire cannot carry: the client refuses it
                pass
        return msg

    return build()


def requests(cls: type[Message], **overrides: st.SearchStrategy) -> st.SearchStrategy:
    return messages(cls.DESCRIPTOR, cls, overrides=overrides)


def assert_clean(call_name: str, err: grpc.RpcError) -> None:
    """A refusal is a deliberate status with a message for people."""
    code, details = err.code(), err.details() or ""
    assert code not in BAD_CODES, f"{call_name}: {code.name}: {details[:300]}"
    assert not PYTHON_WORDS.search(details), f"{call_name}: {code.name} leaks Python: {details[:300]}"


__all__ = ["BAD_CODES", "NASTY", "PYTHON_WORDS", "assert_clean", "messages", "requests"]
