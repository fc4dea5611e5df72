"""Structured JSON logs, and redaction of contract fields marked (privmesh.common.v1.sensitive)."""

from __future__ import annotations

import json
import logging
import sys
import time
from functools import lru_cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from privmesh.common.v1 import common_pb2

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
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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
