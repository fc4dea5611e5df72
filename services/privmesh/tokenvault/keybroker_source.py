"""The production DataKeySource: key-broker over mTLS with the vault's own mesh identity.

The channel is opened on first use, so the vault starts (and answers health checks) before the broker does.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.runtime.errors import read_error
from privmesh.sdk.keybroker.client import allow
from privmesh.tokenvault.keys import GeneratedKey, KeySourceError, Limits, UnwrappedKey

SERVICE = kb.DESCRIPTOR.services_by_name["KeyBroker"]
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
#: What the vault may do with a subject KEK: wrap and unwrap the subject's data keys, see it, rotate it
#: (RotateKeys with rotate_master_keys) and shred it.
SUBJECT_KEY_OPERATIONS = (kb.KEY_OPERATION_GENERATE_DATA_KEY, kb.KEY_OPERATION_DECRYPT, kb.KEY_OPERATION_DESCRIBE,
                          kb.KEY_OPERATION_ROTATE, kb.KEY_OPERATION_SCHEDULE_DELETION)
SUBJECT_KEY_DESCRIPTION = "token-vault subject key (subject_key_shredding)"


def limits_of(caching: kb.DataKeyCaching, present: bool) -> Limits:
    if not present or caching.max_age.ToMicroseconds() <= 0:
        return Limits()
    return Limits(max_age_s=caching.max_age.ToMicroseconds() / 1e6, max_messages=caching.max_messages or 2 ** 32,
                  max_bytes=caching.max_bytes or 2 ** 63 - 1)


def caching_of(limits: Limits) -> kb.DataKeyCaching | None:
    if not limits.reusable:
        return None
    max_age = Duration()
    max_age.FromMicroseconds(int(limits.max_age_s * 1e6))
    return kb.DataKeyCaching(max_age=max_age, max_messages=min(limits.max_messages, 2 ** 32),
                             max_bytes=limits.max_bytes)


class KeyBrokerSource:
    def __init__(self, identity: ClientIdentity, target: str, timeout_seconds: float, principal: str,
                 peer: str) -> None:
        self._identity = identity
        self._peer = peer  # the key-broker's SPIFFE ID, pinned
        self._principal = principal  # the vault's own SPIFFE ID: the only one its subject KEKs let in
        self._target = target
        self._timeout = timeout_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: keybroker_pb2_grpc.KeyBrokerStub | None = None

    def _client(self) -> keybroker_pb2_grpc.KeyBrokerStub:
        if self._stub is None:
            if not self._target:
                raise KeySourceError(True, "key_broker_target is not configured")
            self._channel = secure_channel(self._target, self._identity, [SERVICE], self._timeout, peer=self._peer)
            self._stub = keybroker_pb2_grpc.KeyBrokerStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    @staticmethod
    def _failed(exc: grpc.aio.AioRpcError) -> KeySourceError:
        return KeySourceError(exc.code() in UNAVAILABLE, exc.code().name)

    async def generate(self, key: str, context: Mapping[str, str]) -> GeneratedKey:
        try:
            reply = await self._client().GenerateDataKey(kb.GenerateDataKeyRequest(key=key,
                                                                                   encryption_context=context))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        return GeneratedKey(reply.plaintext, reply.ciphertext_blob, reply.key, reply.key_version,
                            limits_of(reply.caching, reply.HasField("caching")))

    async def decrypt(self, wrapped: bytes, context: Mapping[str, str], key: str) -> UnwrappedKey:
        try:
            reply = await self._client().Decrypt(kb.DecryptRequest(ciphertext_blob=wrapped, encryption_context=context,
                                                                   key=key))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        return UnwrappedKey(reply.plaintext, reply.key, reply.key_version,
                            limits_of(reply.caching, reply.HasField("caching")))

    async def rewrap(self, wrapped: bytes, context: Mapping[str, str], key: str) -> GeneratedKey:
        try:
            reply = await self._client().ReEncrypt(kb.ReEncryptRequest(
                ciphertext_blob=wrapped, source_encryption_context=context, destination_key=key,
                destination_encryption_context=context))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        return GeneratedKey(b"", reply.ciphertext_blob, reply.key, reply.key_version, Limits())

    async def rotate_master_key(self, key: str) -> None:
        try:
            await self._client().RotateKey(kb.RotateKeyRequest(name=key))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None

    async def create_subject_key(self, caching: Limits) -> str:
        policy = kb.KeyPolicy(statements=[allow([self._principal], SUBJECT_KEY_OPERATIONS, "token-vault")])
        try:
            reply = await self._client().CreateKey(kb.CreateKeyRequest(
                description=SUBJECT_KEY_DESCRIPTION, policy=policy, data_key_caching=caching_of(caching)))
        except grpc.aio.AioRpcError as exc:
            raise self._failed(exc) from None
        return str(reply.key.name)

    async def schedule_deletion(self, key: str, waiting_seconds: int) -> int | None:
        try:
            reply = await self._client().ScheduleKeyDeletion(kb.ScheduleKeyDeletionRequest(
                name=key, waiting_period=Duration(seconds=waiting_seconds)))
        except grpc.aio.AioRpcError as exc:
            if read_error(exc).reason == "KEY_DESTROYED":
                return None  # shredded already (a retried ForgetSubject)
            raise self._failed(exc) from None
        return int(reply.key.deletion_time.ToMicroseconds())
