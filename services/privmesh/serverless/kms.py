"""The vault's data keys straight from AWS KMS, through key-broker's aws-kms backend: the serverless vault
has no key-broker in front of KMS, so KMS's key policy and the function's IAM role take the broker's place.

A field's key names a KMS key as key-broker does ("keys/{key id}" or "aliases/{alias}" -> KMS's alias/...).
Every wrap binds the vault's encryption context (service, tenant, field, purpose), exactly as through the
broker, so a field created in the mesh on an aws-kms key reads the same here. Plaintext data keys are
reused across warm invocations within the configured limits, which are key-broker's DataKeyCaching bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from privmesh.keybroker.backends.aws_kms import AwsKmsBackend
from privmesh.keybroker.backends.base import BackendError, InvalidCiphertext, KeyRef, MaterialUnavailable
from privmesh.tokenvault.keys import GeneratedKey, KeySourceError, Limits, UnwrappedKey


def kms_key_id(key: str) -> str:
    """KMS's KeyId for a key-broker key name."""
    if key.startswith("aliases/"):
        return "alias/" + key.removeprefix("aliases/")
    return key.removeprefix("keys/")


class KmsKeySource:
    """A DataKeySource (privmesh.tokenvault.keys) over KMS."""

    def __init__(self, backend: AwsKmsBackend, limits: Limits) -> None:
        self._backend = backend
        self._limits = limits

    async def _call(self, operation: str, *args: object) -> tuple[bytes, bytes] | tuple[bytes, int]:
        try:
            return await asyncio.to_thread(getattr(self._backend, operation), *args)
        except BackendError as exc:
            raise KeySourceError(True, str(exc) or "KMS unavailable") from None
        except (InvalidCiphertext, MaterialUnavailable) as exc:
            raise KeySourceError(False, type(exc).__name__) from None

    async def generate(self, key: str, context: Mapping[str, str]) -> GeneratedKey:
        plaintext, wrapped = await self._call("generate_data_key", KeyRef(kms_key_id(key)), 0, dict(context))
        return GeneratedKey(bytes(plaintext), bytes(wrapped), key, 0, self._limits)

    async def decrypt(self, wrapped: bytes, context: Mapping[str, str], key: str) -> UnwrappedKey:
        plaintext, _ = await self._call("unwrap", KeyRef(kms_key_id(key)), wrapped, dict(context))
        return UnwrappedKey(bytes(plaintext), key, 0, self._limits)

    async def rewrap(self, wrapped: bytes, context: Mapping[str, str], key: str) -> GeneratedKey:
        raise KeySourceError(False, "rotations run in the mesh, not in the serverless vault")

    async def rotate_master_key(self, key: str) -> None:
        raise KeySourceError(False, "rotations run in the mesh, not in the serverless vault")

    async def create_subject_key(self, caching: Limits) -> str:
        raise KeySourceError(False, "subject_key_shredding fields need key-broker (per-subject keys)")

    async def schedule_deletion(self, key: str, waiting_seconds: int) -> int | None:
        raise KeySourceError(False, "subject_key_shredding fields need key-broker (per-subject keys)")
