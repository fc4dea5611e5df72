"""The typed Python client of the key broker (the `privmesh` SDK): plain methods over the generated stub,
returning bytes and small tuples; errors stay grpc.aio.AioRpcError (read them with runtime.errors.read_error).

    async with secure_channel(target, identity, SERVICES) as channel:
        broker = KeyBrokerClient(channel)
        plaintext, wrapped, version = await broker.generate_data_key("aliases/vault", {"tenant": "a"})
        assert await broker.decrypt(wrapped, {"tenant": "a"}) == plaintext
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import grpc

from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.keybroker.v1 import keybroker_pb2_grpc

SERVICES = (pb.DESCRIPTOR.services_by_name["KeyBroker"],)
CRYPTO_OPERATIONS = (pb.KEY_OPERATION_GENERATE_DATA_KEY, pb.KEY_OPERATION_GENERATE_DATA_KEY_WITHOUT_PLAINTEXT,
                     pb.KEY_OPERATION_DECRYPT, pb.KEY_OPERATION_ENCRYPT)


class DataKey(NamedTuple):
    plaintext: bytes
    wrapped: bytes
    key_version: int


def allow(principals: Iterable[str], operations: Iterable[pb.KeyOperation], sid: str = "",
          conditions: pb.PolicyConditions | None = None) -> pb.PolicyStatement:
    """An ALLOW statement for a key policy."""
    return pb.PolicyStatement(sid=sid, effect=pb.POLICY_EFFECT_ALLOW, principals=list(principals),
                              operations=list(operations), conditions=conditions)


class KeyBrokerClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = keybroker_pb2_grpc.KeyBrokerStub(channel)

    async def create_key(self, *, alias: str = "", description: str = "", policy: pb.KeyPolicy | None = None,
                         backend: pb.KeyBackend = pb.KEY_BACKEND_UNSPECIFIED, external: bool = False,
                         caching: pb.DataKeyCaching | None = None, request_id: str = "") -> pb.Key:
        reply: pb.CreateKeyResponse = await self.stub.CreateKey(pb.CreateKeyRequest(
            alias=alias, description=description, policy=policy, backend=backend,
            origin=pb.KEY_ORIGIN_EXTERNAL if external else pb.KEY_ORIGIN_BACKEND, data_key_caching=caching,
            request_id=request_id))
        return reply.key

    async def get_key(self, name: str) -> pb.Key:
        reply: pb.GetKeyResponse = await self.stub.GetKey(pb.GetKeyRequest(name=name))
        return reply.key

    async def rotate_key(self, name: str) -> pb.Key:
        reply: pb.RotateKeyResponse = await self.stub.RotateKey(pb.RotateKeyRequest(name=name))
        return reply.key

    async def generate_data_key(self, key: str, context: Mapping[str, str] | None = None) -> DataKey:
        """A fresh AES-256 data key: (plaintext, wrapped, key version). Keep `wrapped` beside the data."""
        reply: pb.GenerateDataKeyResponse = await self.stub.GenerateDataKey(pb.GenerateDataKeyRequest(
            key=key, encryption_context=dict(context or {})))
        return DataKey(reply.plaintext, reply.ciphertext_blob, reply.key_version)

    async def generate_data_key_without_plaintext(self, key: str,
                                                  context: Mapping[str, str] | None = None) -> tuple[bytes, int]:
        request = pb.GenerateDataKeyWithoutPlaintextRequest(key=key, encryption_context=dict(context or {}))
        reply: pb.GenerateDataKeyWithoutPlaintextResponse = await self.stub.GenerateDataKeyWithoutPlaintext(request)
        return reply.ciphertext_blob, reply.key_version

    async def decrypt(self, wrapped: bytes, context: Mapping[str, str] | None = None, key: str = "") -> bytes:
        """The plaintext data key of `wrapped`, which must be given the context it was wrapped with."""
        reply: pb.DecryptResponse = await self.stub.Decrypt(pb.DecryptRequest(
            ciphertext_blob=wrapped, encryption_context=dict(context or {}), key=key))
        return reply.plaintext

    async def re_encrypt(self, wrapped: bytes, destination_key: str, source_context: Mapping[str, str] | None = None,
                         destination_context: Mapping[str, str] | None = None, source_key: str = "") -> bytes:
        reply: pb.ReEncryptResponse = await self.stub.ReEncrypt(pb.ReEncryptRequest(
            ciphertext_blob=wrapped, source_encryption_context=dict(source_context or {}), source_key=source_key,
            destination_key=destination_key, destination_encryption_context=dict(destination_context or {})))
        return reply.ciphertext_blob

    async def encrypt_message(self, key: str, plaintext: bytes, context: Mapping[str, str] | None = None) -> bytes:
        reply: pb.EncryptMessageResponse = await self.stub.EncryptMessage(pb.EncryptMessageRequest(
            key=key, plaintext=plaintext, encryption_context=dict(context or {})))
        return reply.ciphertext

    async def decrypt_message(self, ciphertext: bytes, context: Mapping[str, str] | None = None) -> bytes:
        reply: pb.DecryptMessageResponse = await self.stub.DecryptMessage(pb.DecryptMessageRequest(
            ciphertext=ciphertext, encryption_context=dict(context or {})))
        return reply.plaintext
