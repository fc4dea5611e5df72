"""Encryption contexts: validation of what callers send, and the canonical bytes bound as AAD to every wrap.

The canonical form is the AWS Encryption SDK's own serialization (entries sorted by UTF-8 key), so a
context binds identically whether it reaches the broker over gRPC or inside an Encryption SDK message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from aws_encryption_sdk.internal.formatting.encryption_context import serialize_encryption_context

from privmesh.runtime.errors import InvalidArgument

MAX_ENTRIES = 32
MAX_BYTES = 8 * 1024
RESERVED_PREFIX = "aws-crypto-"
REASON = "ENCRYPTION_CONTEXT_INVALID"


def validate(context: Mapping[str, str], field: str = "encryption_context") -> dict[str, str]:
    """The context as a plain dict, or INVALID_ARGUMENT (ENCRYPTION_CONTEXT_INVALID) naming the problem."""
    if len(context) > MAX_ENTRIES:
        raise InvalidArgument.single(field, f"at most {MAX_ENTRIES} entries", REASON)
    size = 0
    for key, value in context.items():
        if not key:
            raise InvalidArgument.single(field, "keys must not be empty", REASON)
        if key.startswith(RESERVED_PREFIX):
            raise InvalidArgument.single(f"{field}[{key[:64]}]", f"keys starting with {RESERVED_PREFIX!r} are "
                                         "reserved by the Encryption SDK", REASON)
        size += len(key.encode()) + len(value.encode())
    if size > MAX_BYTES:
        raise InvalidArgument.single(field, f"at most {MAX_BYTES} bytes of keys and values", REASON)
    return dict(context)


def user_entries(context: Mapping[str, str]) -> dict[str, str]:
    """A message's context without the entries the Encryption SDK adds itself (e.g. aws-crypto-public-key):
    what a data key inside a message is wrapped with, so the broker and the SDK helpers agree."""
    return {k: v for k, v in context.items() if not k.startswith(RESERVED_PREFIX)}


def aad(context: Mapping[str, str]) -> bytes:
    """The canonical bytes of a (validated) context."""
    return _canonical(tuple(sorted(context.items()))) if context else b""


@functools.lru_cache(maxsize=256)
def _canonical(items: tuple[tuple[str, str], ...]) -> bytes:
    """Hot callers send the same few contexts; the SDK's serializer is pure Python, so its result is kept."""
    serialized: bytes = serialize_encryption_context(dict(items))  # the SDK ships no type information
    return serialized


def audit_keys(context: Mapping[str, str]) -> str:
    """What the audit log records of a context: its key names, never the values."""
    return ",".join(sorted(context))
