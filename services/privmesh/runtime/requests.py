"""What the runtime checks about every request before a handler sees it: that its bytes decode, that its
google.protobuf.Timestamp and Duration fields (at any depth) hold values the types allow, that every enum
field holds a value its enum declares (proto3 decodes any number), and that every `request_id` (the
contracts' idempotency key, "a client-chosen UUID" in every service) is empty or a UUID.

grpc.aio decodes a request outside the handler and answers UNKNOWN with the exception's type name when
that fails; `guard_deserializer` returns a marker instead, which the interceptor turns into
INVALID_ARGUMENT. protobuf decodes an out-of-range Timestamp without complaint and only raises (a
ValueError or OverflowError) when a handler converts it, so the range check is done here once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from privmesh.runtime.errors import FieldViolation, InvalidArgument

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_MIN_TIMESTAMP_SECONDS, _MAX_TIMESTAMP_SECONDS = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31
_MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years, as google/protobuf/duration.proto says
_MAX_NANOS = 999_999_999
_REQUEST_ID = "request_id"


class Undecodable:
    """Stands for a request whose bytes are not a valid message of the method's request type."""

    __slots__ = ()


UNDECODABLE: Final = Undecodable()
_UNDECODABLE_ERROR = InvalidArgument([FieldViolation("", "the request body is not a valid message of the "
                                                     "method's request type")], "MALFORMED_REQUEST",
                                     "the request could not be decoded")


def guard_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer` returning UNDECODABLE instead of raising (raw-bytes methods have none)."""
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, ValueError, RecursionError):
            return UNDECODABLE

    return deserialize


def check_request(request: Any) -> None:
    """Raises InvalidArgument for an undecodable request, out-of-range well-known-type fields, undeclared
    enum values or a request_id that is not a UUID."""
    if request is UNDECODABLE:
        raise _UNDECODABLE_ERROR
    if isinstance(request, Message) and _needs_check(request.DESCRIPTOR):
        found: list[FieldViolation] = []
        _check_message(request, "", found)
        if found:
            raise InvalidArgument(found)


async def checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose every message has passed `check_request`."""
    async for request in requests:
        check_request(request)
        yield request


@cache
def _needs_check(descriptor: Descriptor) -> bool:
    """Whether a message of this type can contain a Timestamp, a Duration, an enum or a request_id (cached
    per type): requests with none are not walked."""
    return _reaches_checked(descriptor, frozenset())


def _is_request_id(field: FieldDescriptor) -> bool:
    # types-protobuf declares a field's name and type (and the TYPE_* constants) as Any.
    return bool(field.name == _REQUEST_ID and field.type == FieldDescriptor.TYPE_STRING)


def _reaches_checked(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name in (_TIMESTAMP, _DURATION) or any(
            _is_request_id(f) or f.enum_type is not None for f in descriptor.fields):
        return True
    if descriptor.full_name in seen:
        return False
    seen = seen | {descriptor.full_name}
    return any(f.message_type is not None and _reaches_checked(f.message_type, seen) for f in descriptor.fields)


def _check_message(message: Message, path: str, found: list[FieldViolation]) -> None:
    name = message.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        _check_timestamp(message, path, found)
        return
    if name == _DURATION:
        _check_duration(message, path, found)
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if _is_request_id(field):
            _check_uuid(value, where, found)
        if field.enum_type is not None:
            _check_enum(field, value, where, found)
        if field.message_type is None or not _needs_check(field.message_type):
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if value_field.enum_type is not None:
                    _check_enum(value_field, item, f"{where}[{key!r}]", found)
                elif value_field.message_type is not None:
                    _check_message(item, f"{where}[{key!r}]", found)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_message(item, f"{where}[{index}]", found)
        else:
            _check_message(value, where, found)


def _check_enum(field: FieldDescriptor, value: Any, path: str, found: list[FieldViolation]) -> None:
    declared = field.enum_type.values_by_number
    numbers = [(f"{path}[{i}]", n) for i, n in enumerate(value)] if field.is_repeated else [(path, value)]
    for where, number in numbers:
        if number not in declared:
            found.append(FieldViolation(where, f"{number} is not a value of {field.enum_type.full_name}"))


def _check_uuid(value: str, path: str, found: list[FieldViolation]) -> None:
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = ""
    if canonical != value.lower():  # uuid.UUID also takes braces, "urn:uuid:" and bare hex: one spelling only
        found.append(FieldViolation(path, "must be a UUID in its 36-character form "
                                          "(e.g. 123e4567-e89b-42d3-a456-426614174000)"))


def _check_timestamp(stamp: Any, path: str, found: list[FieldViolation]) -> None:
    if not _MIN_TIMESTAMP_SECONDS <= stamp.seconds <= _MAX_TIMESTAMP_SECONDS:
        found.append(FieldViolation(f"{path}.seconds", "must be within 0001-01-01 .. 9999-12-31"))
    if not 0 <= stamp.nanos <= _MAX_NANOS:
        found.append(FieldViolation(f"{path}.nanos", "must be within 0 .. 999,999,999"))


def _check_duration(duration: Any, path: str, found: list[FieldViolation]) -> None:
    if not -_MAX_DURATION_SECONDS <= duration.seconds <= _MAX_DURATION_SECONDS:
        found.append(FieldViolation(f"{path}.seconds", "must be within ±315,576,000,000 (10,000 years)"))
    if not -_MAX_NANOS <= duration.nanos <= _MAX_NANOS:
        found.append(FieldViolation(f"{path}.nanos", "must be within ±999,999,999"))
    elif duration.seconds and duration.nanos and (duration.seconds < 0) != (duration.nanos < 0):
        found.append(FieldViolation(f"{path}.nanos", "must have the sign of seconds"))
