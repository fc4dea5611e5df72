"""Hypothesis strategies that build any protobuf message from its descriptor, and mutations of the bytes.

Hand-written: the two PyPI packages for this (hypothesis-protobuf, 2015; hypothesis-pb, 2019) are
unmaintained and know neither proto3 maps of messages nor the well-known types' edge values.
Values lean towards what breaks servers: boundary integers, NaN and infinities, empty and over-long
strings, resource names of every kind, Timestamp and Duration at and past their limits.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 4
NAMES = ("", "/", "x", "federations/f", "federations/f/runs/1", "federations/f/participants/p", "runs/x",
         "keys/k", "aliases/a", "tenants/t", "tenants/t/fields/f", "datasets/d", "models/m", "sessions/s",
         "policies/p", "prod-enclave", "*", "../../etc/passwd", "SELECT COUNT(*) FROM d", "a" * 300,
         "8a4c2d7e-0000-4000-8000-000000000001", "\u00e9\u0000\U0001f600")
T = FieldDescriptor
_INT_EDGES = {
    T.TYPE_INT32: (-(2**31), 2**31 - 1), T.TYPE_SINT32: (-(2**31), 2**31 - 1), T.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    T.TYPE_INT64: (-(2**63), 2**63 - 1), T.TYPE_SINT64: (-(2**63), 2**63 - 1), T.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    T.TYPE_UINT32: (0, 2**32 - 1), T.TYPE_FIXED32: (0, 2**32 - 1),
    T.TYPE_UINT64: (0, 2**64 - 1), T.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, -1, 0, 1, 2, 63, 64, 1024, 2**31 - 1, 2**32, 10**9) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(max(low, -1000), min(high, 1000)), st.integers(low, high))


def _floats(double: bool) -> st.SearchStrategy[float]:
    special = [0.0, -0.0, 1e-300 if double else 1e-38, 1e300 if double else 3e38, math.nan, math.inf, -math.inf, 0.5]
    return st.one_of(st.sampled_from(special), st.floats(allow_nan=False, width=64 if double else 32))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_EDGES:
        return _integers(*_INT_EDGES[kind])
    if kind in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        return _floats(kind == T.TYPE_DOUBLE)
    if kind == T.TYPE_BOOL:
        return st.booleans()
    if kind == T.TYPE_STRING:
        return st.one_of(st.sampled_from(NAMES), st.text(max_size=40))
    if kind == T.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x00" * 32, b"\xff" * 100]))
    if kind == T.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), _integers(-(2**31), 2**31 - 1))
    raise AssertionError(f"unhandled field type {kind}")


def _time_parts(name: str) -> st.SearchStrategy[dict[str, int]]:
    """Timestamp and Duration: mostly in range, often at or past the limits the types allow."""
    low, high = (-62_135_596_800, 253_402_300_799) if name == "google.protobuf.Timestamp" else (
        -315_576_000_000, 315_576_000_000)
    seconds = st.one_of(st.sampled_from([low, high, low - 1, high + 1, 0, 1, -1, 2**63 - 1, -(2**63)]),
                        st.integers(-10**9, 4 * 10**9))
    nanos = st.one_of(st.sampled_from([0, 999_999_999, 1_000_000_000, -1, -(2**31)]), st.integers(0, 999_999_999))
    return st.fixed_dictionaries({"seconds": seconds, "nanos": nanos})


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.message_type is None:
        return _scalar(field)
    if depth >= MAX_DEPTH:
        return None
    return messages(field.message_type, depth + 1)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    msg: Message = message_factory.GetMessageClass(descriptor)()
    if descriptor.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        for key, number in draw(_time_parts(descriptor.full_name)).items():
            setattr(msg, key, number)
        return msg
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            values = _value(value_field, depth)
            if values is None:
                continue
            entries = draw(st.dictionaries(_scalar(key_field), values, max_size=3))
            target = getattr(msg, field.name)
            for key, value in entries.items():
                if value_field.message_type is None:
                    target[key] = value
                else:
                    target[key].CopyFrom(value)
            continue
        values = _value(field, depth)
        if values is None:
            continue
        if field.is_repeated:
            items = draw(st.lists(values, max_size=3))
            if field.message_type is None:
                getattr(msg, field.name).extend(items)
            else:
                for item in items:
                    getattr(msg, field.name).add().CopyFrom(item)
        elif field.message_type is None:
            setattr(msg, field.name, draw(values))
        else:
            getattr(msg, field.name).CopyFrom(draw(values))
    return msg


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type (nested messages down to MAX_DEPTH)."""
    return _message(descriptor, depth)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    """`raw` with bytes flipped, cut, inserted or repeated: mostly not a valid message any more."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "varint"]))
        at = draw(st.integers(0, len(data))) if data else 0
        if how == "flip" and data:
            index = min(at, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            data = data[:at]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "repeat":
            data = data + data[at:]
        else:  # a field with a huge length prefix, or an endless varint
            data[at:at] = draw(st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 11, b"\x0b", b"\x0c"]))
    return bytes(data)
