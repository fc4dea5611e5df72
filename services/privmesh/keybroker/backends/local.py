"""The embedded backend: AES-256 material made with `cryptography`, kept in the sealed keystore file.

Imported material is unwrapped with RSAES-OAEP-SHA-256 under a one-off RSA-4096 wrapping key; the import
token is that private key and the key id, sealed under the root key (opaque to the caller, useless to
anyone without the root key). A keyed fingerprint of each version's material stays after the material is
deleted, so a re-import can be checked against it (as KMS does).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privmesh.keybroker import blob as blobs
from privmesh.keybroker.backends.base import (
    DATA_KEY_SIZE,
    ImportParameters,
    ImportRejected,
    InvalidCiphertext,
    KeyRef,
    MaterialMismatch,
    MaterialUnavailable,
    Unsupported,
)
from privmesh.keybroker.keystore import Keystore
from privmesh.sdk.keybroker.context import aad

IMPORT_TOKEN_TTL = timedelta(hours=24)
_TOKEN_HEAD = struct.Struct(">16sq")
_TOKEN_AAD = b"privmesh-keybroker-import-token"


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _material_name(key_id: str, version: int) -> str:
    return f"{key_id}/{version}"


def _fingerprint_name(key_id: str, version: int) -> str:
    return f"{key_id}/{version}#fingerprint"


class LocalBackend:
    name = "local"
    releases_to_recipients = False
    blocking = False  # in-memory AES-GCM: microseconds, run on the event loop
    opaque_blobs = False  # its blobs name their key and version in a header

    def __init__(self, keystore_file: Path, root_key: bytes) -> None:
        self._keystore = Keystore(keystore_file, root_key)
        self._token_aead = AESGCM(hashlib.sha256(b"import-token" + root_key).digest())
        self._fingerprint_key = hashlib.sha256(b"material-fingerprint" + root_key).digest()
        # per material entry: (the material it was made from, its WrappingKey); dropped with the material
        self._wrapping: dict[str, tuple[bytes, blobs.WrappingKey]] = {}

    def _fingerprint(self, material: bytes) -> bytes:
        return hmac.new(self._fingerprint_key, material, hashlib.sha256).digest()

    def _install(self, key_id: str, version: int, material: bytes) -> None:
        self._keystore.update({_material_name(key_id, version): material,
                               _fingerprint_name(key_id, version): self._fingerprint(material)})
        self._wrapping.pop(_material_name(key_id, version), None)

    def _remove(self, names: list[str]) -> None:
        self._keystore.update(remove=names)
        for name in names:
            self._wrapping.pop(name, None)

    def _wrapping_key(self, key_id: str, version: int) -> blobs.WrappingKey:
        """The version's WrappingKey, made once while the keystore holds the same material."""
        name = _material_name(key_id, version)
        material = self._keystore.get(name)
        if material is None:
            raise MaterialUnavailable
        cached = self._wrapping.get(name)
        if cached is None or cached[0] is not material:
            cached = material, blobs.WrappingKey(material, blobs.BlobHeader(key_id, version))
            self._wrapping[name] = cached
            if self._keystore.get(name) is not material:  # removed meanwhile by a worker thread: keep no copy
                self._wrapping.pop(name, None)
        return cached[1]

    def create_key(self, key_id: str, description: str, external: bool) -> KeyRef:
        if not external:
            self._install(key_id, 1, os.urandom(DATA_KEY_SIZE))
        return KeyRef(key_id)

    def rotate(self, key: KeyRef, version: int) -> None:
        self._install(key.key_id, version, os.urandom(DATA_KEY_SIZE))

    def wrap(self, key: KeyRef, version: int, plaintext: bytes, context: dict[str, str]) -> bytes:
        return self._wrapping_key(key.key_id, version).seal(plaintext, aad(context))

    def generate_data_key(self, key: KeyRef, version: int, context: dict[str, str]) -> tuple[bytes, bytes]:
        plaintext = os.urandom(DATA_KEY_SIZE)
        return plaintext, self.wrap(key, version, plaintext, context)

    def blob_key(self, blob: bytes) -> tuple[str, int] | None:
        if not blobs.is_local(blob):
            return None
        try:
            header = blobs.read_header(blob)
        except blobs.BadBlob:
            raise InvalidCiphertext from None
        return header.key_id, header.version

    def unwrap(self, key: KeyRef, blob: bytes, context: dict[str, str]) -> tuple[bytes, int]:
        try:
            header = blobs.read_header(blob)
            if header.key_id != key.key_id:
                raise InvalidCiphertext
            return self._wrapping_key(key.key_id, header.version).open(blob, aad(context)), header.version
        except blobs.BadBlob:
            raise InvalidCiphertext from None

    def re_encrypt(self, source: KeyRef, blob: bytes, source_context: dict[str, str], destination: KeyRef,
                   version: int, destination_context: dict[str, str]) -> tuple[bytes, int]:
        plaintext, source_version = self.unwrap(source, blob, source_context)
        return self.wrap(destination, version, plaintext, destination_context), source_version

    def generate_for_recipient(self, key: KeyRef, context: dict[str, str], document: bytes) -> tuple[bytes, bytes]:
        raise Unsupported("the broker encrypts to recipients of local keys itself")

    def decrypt_for_recipient(self, key: KeyRef, blob: bytes, context: dict[str, str], document: bytes) -> bytes:
        raise Unsupported("the broker encrypts to recipients of local keys itself")

    def set_enabled(self, key: KeyRef, enabled: bool) -> None:
        """States are the service's; the keystore has nothing to mirror."""

    def schedule_destruction(self, key: KeyRef, not_before: datetime) -> None:
        """The service destroys at deletion time; nothing to do ahead of it."""

    def cancel_destruction(self, key: KeyRef) -> None:
        """Nothing was scheduled in the keystore."""

    def destroy(self, key: KeyRef, versions: list[int]) -> None:
        self._remove([_material_name(key.key_id, v) for v in versions])

    def import_parameters(self, key: KeyRef) -> ImportParameters:
        wrapping = rsa.generate_private_key(public_exponent=65537, key_size=4096)
        expire = datetime.now(timezone.utc) + IMPORT_TOKEN_TTL
        head = _TOKEN_HEAD.pack(uuid.UUID(key.key_id).bytes, int(expire.timestamp()))
        private = wrapping.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        nonce = os.urandom(12)
        token = head + nonce + self._token_aead.encrypt(nonce, private, _TOKEN_AAD + head)
        public = wrapping.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        return ImportParameters(public, token, expire)

    def import_material(self, key: KeyRef, version: int, token: bytes, wrapped: bytes,
                        expire: datetime | None) -> None:
        if len(token) < _TOKEN_HEAD.size + 12 + 16:
            raise ImportRejected
        head = token[:_TOKEN_HEAD.size]
        key_bytes, expires = _TOKEN_HEAD.unpack(head)
        if key_bytes != uuid.UUID(key.key_id).bytes or expires < datetime.now(timezone.utc).timestamp():
            raise ImportRejected
        try:
            private_der = self._token_aead.decrypt(token[_TOKEN_HEAD.size:_TOKEN_HEAD.size + 12],
                                                   token[_TOKEN_HEAD.size + 12:], _TOKEN_AAD + head)
            private = serialization.load_der_private_key(private_der, None)
            assert isinstance(private, rsa.RSAPrivateKey)
            material = private.decrypt(wrapped, _oaep())
        except (InvalidTag, ValueError):
            raise ImportRejected from None
        if len(material) != DATA_KEY_SIZE:
            raise ImportRejected
        known = self._keystore.get(_fingerprint_name(key.key_id, version))
        if known is not None and not hmac.compare_digest(known, self._fingerprint(material)):
            raise MaterialMismatch
        self._install(key.key_id, version, material)

    def delete_imported(self, key: KeyRef, version: int) -> None:
        self._remove([_material_name(key.key_id, version)])
