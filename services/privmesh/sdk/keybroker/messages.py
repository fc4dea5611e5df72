"""AWS Encryption SDK messages whose data keys are wrapped by the broker.

One master key class serves both sides: the broker plugs in its backend (EncryptMessage/DecryptMessage),
the SDK's envelope helpers plug in gRPC calls to the broker (GenerateDataKey/Decrypt). Either way a
message carries one encrypted data key with provider id "privmesh-keybroker", key info = the key's
resource name, and the broker's ciphertext blob, wrapped with the message's encryption context minus the
entries the SDK adds itself; so either side decrypts what the other made. The commitment policy is always
REQUIRE_ENCRYPT_REQUIRE_DECRYPT, and only key-committing suites exist.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import attr
import aws_encryption_sdk
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache
from aws_encryption_sdk.exceptions import AWSEncryptionSDKClientError, EncryptKeyError
from aws_encryption_sdk.identifiers import Algorithm
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from aws_encryption_sdk.key_providers.base import MasterKey, MasterKeyConfig
from aws_encryption_sdk.materials_managers.caching import CachingCryptoMaterialsManager
from aws_encryption_sdk.structures import DataKey, EncryptedDataKey, MessageHeader

from privmesh.sdk.keybroker.context import user_entries

PROVIDER_ID = "privmesh-keybroker"
SUITES = {
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
}
MAX_ENCRYPTED_DATA_KEYS = 1
SDK = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
                                             max_encrypted_data_keys=MAX_ENCRYPTED_DATA_KEYS)

Generate = Callable[[dict[str, str]], tuple[bytes, bytes]]  # context -> (plaintext, blob)
Wrap = Callable[[bytes, dict[str, str]], bytes]  # plaintext, context -> blob
Unwrap = Callable[[bytes, dict[str, str]], bytes]  # blob, context -> plaintext


class MessageError(Exception):
    """The message is malformed, not for this broker, or fails authentication."""


@dataclass(frozen=True)
class Wrapping:
    """What the broker (or a client of it) does with data keys of one key."""

    generate: Generate
    wrap: Wrap | None  # None: only generated data keys (a message has one broker key)
    unwrap: Unwrap


@attr.s(hash=True)
class BrokerMasterKeyConfig(MasterKeyConfig):  # type: ignore[misc]
    provider_id = PROVIDER_ID
    wrapping: Wrapping | None = attr.ib(hash=False, default=None)


class BrokerMasterKey(MasterKey):  # type: ignore[misc]
    """A broker key as an Encryption SDK master key; key_id is the key's resource name."""

    provider_id = PROVIDER_ID
    _config_class = BrokerMasterKeyConfig

    def __init__(self, **kwargs: Any) -> None:
        self._wrapping: Wrapping = self.config.wrapping

    def _generate_data_key(self, algorithm: Any, encryption_context: dict[str, str]) -> DataKey:
        plaintext, blob = self._wrapping.generate(user_entries(encryption_context))
        return DataKey(key_provider=self.key_provider, data_key=plaintext, encrypted_data_key=blob)

    def _encrypt_data_key(self, data_key: Any, algorithm: Any, encryption_context: dict[str, str]) -> EncryptedDataKey:
        if self._wrapping.wrap is None:
            raise EncryptKeyError("this master key only generates data keys")
        blob = self._wrapping.wrap(data_key.data_key, user_entries(encryption_context))
        return EncryptedDataKey(key_provider=self.key_provider, encrypted_data_key=blob)

    def _decrypt_data_key(self, encrypted_data_key: Any, algorithm: Any,
                          encryption_context: dict[str, str]) -> DataKey:
        plaintext = self._wrapping.unwrap(encrypted_data_key.encrypted_data_key, user_entries(encryption_context))
        return DataKey(key_provider=self.key_provider, data_key=plaintext,
                       encrypted_data_key=encrypted_data_key.encrypted_data_key)


def master_key(key_name: str, wrapping: Wrapping) -> BrokerMasterKey:
    return BrokerMasterKey(key_id=key_name, wrapping=wrapping)


def caching_manager(key: BrokerMasterKey, max_age_s: float, max_messages: int, max_bytes: int,
                    capacity: int = 100) -> CachingCryptoMaterialsManager:
    """The SDK's caching materials manager: reuses a data key within age, message and byte limits."""
    return CachingCryptoMaterialsManager(master_key_provider=key, cache=LocalCryptoMaterialsCache(capacity),
                                         max_age=float(max_age_s), max_messages_encrypted=max_messages,
                                         max_bytes_encrypted=max_bytes)


@dataclass(frozen=True)
class MessageKey:
    """The broker key a message's data key is wrapped under, read from the header before decrypting."""

    key_name: str
    encryption_context: dict[str, str]
    algorithm: str
    header: MessageHeader


def read_message_key(prefix: io.BufferedIOBase | io.BytesIO) -> MessageKey:
    """Parses a message header (from a stream or bytes) and names the broker key of its data key."""
    try:
        header, _ = deserialize_header(prefix, max_encrypted_data_keys=MAX_ENCRYPTED_DATA_KEYS)
    except (AWSEncryptionSDKClientError, ValueError, KeyError, TypeError, OverflowError):
        raise MessageError("not an AWS Encryption SDK message") from None
    mine = [k for k in header.encrypted_data_keys if k.key_provider.provider_id == PROVIDER_ID]
    if len(mine) != 1 or header.algorithm.name not in SUITES:
        raise MessageError("the message's data key is not wrapped by this broker")
    name = mine[0].key_provider.key_info.decode("utf-8", "replace")
    return MessageKey(name, dict(header.encryption_context), header.algorithm.name, header)

