"""Where the vault's keys come from: key-broker data keys, behind a small interface, and the in-memory
caches that reuse them only within the limits key-broker returns with each key.

Every field has one 32-byte secret (from GenerateDataKey, stored only wrapped) from which its
token-derivation and look-up keys are derived with HKDF, and data keys (also from GenerateDataKey) that
encrypt the stored values with AES-256-GCM; in subject_key_shredding fields a subject's data keys are
wrapped under a key-broker key of the subject's own (its KEK), destroyed by ForgetSubject. A plaintext key
is kept in memory only as long as key-broker's DataKeyCaching allows (age, messages, bytes); without limits
it serves one request and is then forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privmesh.tokenvault.profiles import FieldKeys


@dataclass(frozen=True)
class Limits:
    """How long and for how much one plaintext data key may be reused (key-broker's DataKeyCaching)."""

    max_age_s: float = 0.0  # 0: one use only
    max_messages: int = 1
    max_bytes: int = 2 ** 63 - 1

    @property
    def reusable(self) -> bool:
        return self.max_age_s > 0


@dataclass(frozen=True)
class GeneratedKey:
    plaintext: bytes
    wrapped: bytes
    key_name: str  # the key-broker key's resource name
    key_version: int
    limits: Limits


@dataclass(frozen=True)
class UnwrappedKey:
    plaintext: bytes
    key_name: str
    key_version: int
    limits: Limits


class KeySourceError(Exception):
    """Key-broker did not give the key. `unavailable`: it could not be reached; otherwise it refused."""

    def __init__(self, unavailable: bool, detail: str) -> None:
        super().__init__(detail)
        self.unavailable = unavailable
        self.detail = detail


class DataKeySource(Protocol):
    """Key-broker as the vault needs it (production: privmesh.tokenvault.keybroker_source)."""

    async def generate(self, key: str, context: Mapping[str, str]) -> GeneratedKey: ...

    async def decrypt(self, wrapped: bytes, context: Mapping[str, str], key: str) -> UnwrappedKey: ...

    async def rewrap(self, wrapped: bytes, context: Mapping[str, str], key: str) -> GeneratedKey:
        """The same key wrapped under `key`'s primary version (plaintext left empty)."""
        ...

    async def rotate_master_key(self, key: str) -> None: ...

    async def create_subject_key(self, caching: Limits) -> str:
        """A new key-broker key (a subject KEK) that only the vault may use, with no alias and a description
        that names nobody: its resource name."""
        ...

    async def schedule_deletion(self, key: str, waiting_seconds: int) -> int | None:
        """Schedules the key's destruction; a key already pending deletion or destroyed counts as done. Returns
        when key-broker destroys it (microseconds since the epoch), None when it is destroyed already."""
        ...


def field_keys(secret: bytes) -> FieldKeys:
    """The token and look-up keys of a field, independent of each other, from its secret."""

    def derive(info: bytes, length: int = 32) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)

    return FieldKeys(derive(b"privmesh token-vault token key"), derive(b"privmesh token-vault lookup key"),
                     derive(b"privmesh token-vault random token locator keys", 64))


@dataclass
class _Cached:
    plaintext: bytes
    limits: Limits
    born: float
    messages: int = 0
    bytes_used: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    def allows(self, messages: int, size: int, now: float) -> bool:
        limits = self.limits
        return (limits.reusable and now - self.born < limits.max_age_s
                and self.messages + messages <= limits.max_messages
                and self.bytes_used + size <= limits.max_bytes)


class KeyCache:
    """Plaintext keys by an id, each used at most within its limits; a miss means asking key-broker again."""

    def __init__(self) -> None:
        self._entries: dict[object, _Cached] = {}

    def take(self, ident: object, messages: int = 1, size: int = 0) -> _Cached | None:
        """The cached key if it may protect `messages` more records of `size` bytes; counts them."""
        cached = self._entries.get(ident)
        if cached is None:
            return None
        if not cached.allows(messages, size, time.monotonic()):
            del self._entries[ident]
            return None
        cached.messages += messages
        cached.bytes_used += size
        return cached

    def put(self, ident: object, plaintext: bytes, limits: Limits, messages: int = 1, size: int = 0,
            **meta: object) -> _Cached:
        cached = _Cached(plaintext, limits, time.monotonic(), messages, size, dict(meta))
        if limits.reusable:
            self._entries[ident] = cached
        return cached

    def drop(self, ident: object) -> None:
        self._entries.pop(ident, None)

    def clear(self) -> None:
        self._entries.clear()
