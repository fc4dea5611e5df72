"""The local backend's wrapped data key ("ciphertext blob"): which key and version wrapped it, and the
AES-256-GCM wrap itself, with the header and the encryption context as additional authenticated data.

    magic "PMKB" | format 0x01 | key id (16-byte UUID) | version (uint32 BE) | nonce (12) | ciphertext + tag

Written by hand because it is the broker's own on-disk/on-wire format (as KMS's CiphertextBlob is KMS's);
the cryptography is `cryptography`'s AES-GCM.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"PMKB"
FORMAT = 1
_HEADER = struct.Struct(">4sB16sI")
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_BLOB = 6 * 1024


class BadBlob(ValueError):
    """Malformed, not made by this broker, or fails authentication; deliberately not said which."""


@dataclass(frozen=True)
class BlobHeader:
    key_id: str
    version: int

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, FORMAT, uuid.UUID(self.key_id).bytes, self.version)


def is_local(blob: bytes) -> bool:
    return blob[:4] == MAGIC


def read_header(blob: bytes) -> BlobHeader:
    """The key and version a blob names; BadBlob if it is not a local blob of plausible size."""
    if len(blob) > MAX_BLOB or len(blob) < _HEADER.size + NONCE_SIZE + TAG_SIZE:
        raise BadBlob
    magic, fmt, key_id, version = _HEADER.unpack_from(blob)
    if magic != MAGIC or fmt != FORMAT or version < 1:
        raise BadBlob
    return BlobHeader(str(uuid.UUID(bytes=key_id)), version)


class WrappingKey:
    """One key version's AES-GCM instance and encoded header, made once per version rather than per wrap."""

    def __init__(self, material: bytes, header: BlobHeader) -> None:
        self._aead = AESGCM(material)
        self._head = header.encode()

    def seal(self, plaintext: bytes, context_aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return self._head + nonce + self._aead.encrypt(nonce, plaintext, self._head + context_aad)

    def open(self, blob: bytes, context_aad: bytes) -> bytes:
        """The plaintext of a blob whose header names this key version; BadBlob if it fails authentication."""
        head = blob[:_HEADER.size]
        nonce = blob[_HEADER.size:_HEADER.size + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, blob[_HEADER.size + NONCE_SIZE:], head + context_aad)
        except InvalidTag:
            raise BadBlob from None
