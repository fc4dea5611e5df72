"""The interface every key backend implements. Synchronous (the keystore and boto3 are); the service calls
it from worker threads. Backends do cryptography and nothing else: states, policies and audit are the
service's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

DATA_KEY_SIZE = 32


@dataclass(frozen=True)
class KeyRef:
    """A key as its backend knows it."""

    key_id: str
    arn: str = ""  # the KMS key ARN on aws-kms


@dataclass(frozen=True)
class ImportParameters:
    public_key: bytes  # RSA-4096 DER SubjectPublicKeyInfo
    import_token: bytes
    expire_time: datetime


class BackendError(Exception):
    """The backend cannot be reached or failed (UNAVAILABLE)."""


class Unsupported(Exception):
    """The backend does not implement this operation or option (UNIMPLEMENTED)."""


class InvalidCiphertext(Exception):
    """The blob does not unwrap (malformed, tampered, other key, other context)."""


class MaterialUnavailable(Exception):
    """The version's material is not present (destroyed, not imported, deleted)."""


class ImportRejected(Exception):
    """The import token is invalid or expired, or the material does not unwrap under it."""


class MaterialMismatch(Exception):
    """Re-imported material differs from what the version had."""


class Backend(Protocol):
    name: str  # "local" or "aws-kms"
    releases_to_recipients: bool  # whether the backend encrypts to an attested document's key itself (KMS)
    blocking: bool  # whether wrap/unwrap/generate do I/O (then they run in worker threads)
    opaque_blobs: bool  # whether its blobs do not name their key readably (callers must name it: KMS)

    def create_key(self, key_id: str, description: str, external: bool) -> KeyRef:
        """Creates the key (and version 1's material unless external); returns how the backend names it."""

    def rotate(self, key: KeyRef, version: int) -> None:
        """Adds material for `version`, which becomes the one that wraps."""

    def wrap(self, key: KeyRef, version: int, plaintext: bytes, context: dict[str, str]) -> bytes:
        """Wraps plaintext under the version, binding the context."""

    def generate_data_key(self, key: KeyRef, version: int, context: dict[str, str]) -> tuple[bytes, bytes]:
        """A fresh 32-byte data key and its wrap."""

    def unwrap(self, key: KeyRef, blob: bytes, context: dict[str, str]) -> tuple[bytes, int]:
        """The plaintext and the version that wrapped it."""

    def blob_key(self, blob: bytes) -> tuple[str, int] | None:
        """(key id, version) that a blob's own header names, read without decrypting and without I/O; None when
        the blob is not this backend's or does not name its key readably (InvalidCiphertext: malformed)."""

    def generate_for_recipient(self, key: KeyRef, context: dict[str, str], document: bytes) -> tuple[bytes, bytes]:
        """(wrap, ciphertext for the attested recipient) made by the backend itself (KMS's Recipient)."""

    def decrypt_for_recipient(self, key: KeyRef, blob: bytes, context: dict[str, str], document: bytes) -> bytes:
        """The blob's data key as ciphertext for the attested recipient, made by the backend itself."""

    def re_encrypt(self, source: KeyRef, blob: bytes, source_context: dict[str, str], destination: KeyRef,
                   version: int, destination_context: dict[str, str]) -> tuple[bytes, int]:
        """Re-wraps a blob of this backend under another key of this backend; returns (blob, source version)."""

    def set_enabled(self, key: KeyRef, enabled: bool) -> None:
        """Mirrors EnableKey/DisableKey into the backend."""

    def schedule_destruction(self, key: KeyRef, not_before: datetime) -> None:
        """The material must become unusable and be destroyed no earlier than `not_before`."""

    def cancel_destruction(self, key: KeyRef) -> None:
        """Undoes schedule_destruction."""

    def destroy(self, key: KeyRef, versions: list[int]) -> None:
        """Destroys the material of the listed versions now (crypto-shredding)."""

    def import_parameters(self, key: KeyRef) -> ImportParameters:
        """A wrapping key and token for ImportKeyMaterial."""

    def import_material(self, key: KeyRef, version: int, token: bytes, wrapped: bytes,
                        expire: datetime | None) -> None:
        """Unwraps and installs imported material for `version` (MaterialMismatch on a different re-import)."""

    def delete_imported(self, key: KeyRef, version: int) -> None:
        """Deletes imported material at once."""
