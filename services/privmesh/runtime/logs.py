"""Structured JSON logs, and redaction of contract fields marked (privmesh.common.v1.sensitive).

Every line is one JSON object on stderr with the trace_id and span_id of the span current when it was
written (empty outside any span), so a log line leads to its trace. Spans never go to this stream.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import lru_cache
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry import trace

from privmesh.common.v1 import common_pb2
from privmesh.runtime.tracing import relative_frames

REDACTED = "[REDACTED]"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        entry["trace_id"] = format(span.trace_id, "032x") if span.is_valid else ""
        entry["span_id"] = format(span.span_id, "016x") if span.is_valid else ""
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["exception"] = {"type": type(error).__qualname__, "frames": relative_frames(error.__traceback__)}
        return json.dumps(entry, default=str)


# The level of a call's log line by its status code's class: the caller's mistakes at INFO, refusals and
# transient trouble at WARNING, the server's own faults at ERROR.
_WARNING_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
_ERROR_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED,
                          grpc.StatusCode.DATA_LOSS})


def level_of(code: grpc.StatusCode) -> int:
    """INFO for OK and the caller's mistakes (INVALID_ARGUMENT, NOT_FOUND...), WARNING for refusals and
    transient failures, ERROR for server faults."""
    if code in _ERROR_CODES:
        return logging.ERROR
    if code in _WARNING_CODES:
        return logging.WARNING
    return logging.INFO


def configure_logging(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@lru_cache(maxsize=1024)
def _sensitive_fields(descriptor: Descriptor) -> frozenset[str]:
    return frozenset(f.name for f in descriptor.fields if f.GetOptions().Extensions[common_pb2.sensitive])


def redact(message: Message) -> dict[str, Any]:
    """The message as a dict, with every sensitive field (at any depth) replaced by "[REDACTED]"."""
    sensitive = _sensitive_fields(message.DESCRIPTOR)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.name in sensitive:
            out[field.name] = REDACTED
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                out[field.name] = {k: redact(v) if isinstance(v, Message) else v for k, v in value.items()}
            elif field.label == FieldDescriptor.LABEL_REPEATED:
                out[field.name] = [redact(v) for v in value]
            else:
                out[field.name] = redact(value)
        elif field.type == FieldDescriptor.TYPE_BYTES:
            out[field.name] = f"<{len(value)} bytes>" if not isinstance(value, list) else f"<{len(value)} items>"
        else:
            out[field.name] = list(value) if field.label == FieldDescriptor.LABEL_REPEATED else value
    return out
