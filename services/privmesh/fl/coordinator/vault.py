"""Trained models at rest: encrypted in memory as AWS Encryption SDK messages under a key-broker key (through
key-broker's envelope helpers), decrypted in memory for authorised readers. No plaintext model touches disk."""

from __future__ import annotations

import io
from collections.abc import Mapping

import grpc

from privmesh.keybroker.v1 import keybroker_pb2 as kb
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, KeyBrokerClient, allow
from privmesh.sdk.keybroker.envelope import Envelope


class ModelVault:
    def __init__(self, channel: grpc.aio.Channel, own_principal: str) -> None:
        self._client = KeyBrokerClient(channel)
        self._principal = own_principal
        self._ensured: set[str] = set()

    async def ensure_key(self, key: str) -> None:
        """Creates an alias key the coordinator may use when it does not exist yet (the server's default key)."""
        if key in self._ensured:
            return
        try:
            await self._client.get_key(key)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or not key.startswith("aliases/"):
                raise
            policy = kb.KeyPolicy(statements=[
                allow([self._principal], [kb.KEY_OPERATION_DESCRIBE, kb.KEY_OPERATION_GET_KEY_POLICY,
                                          kb.KEY_OPERATION_PUT_KEY_POLICY], "coordinator-admin"),
                allow([self._principal], CRYPTO_OPERATIONS, "coordinator-models")])
            try:
                await self._client.create_key(alias=key.removeprefix("aliases/"), policy=policy,
                                              description="fl-coordinator trained models")
            except grpc.aio.AioRpcError as race:
                if race.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
        self._ensured.add(key)

    async def seal(self, key: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        await self.ensure_key(key)
        out = io.BytesIO()
        await Envelope(self._client, key).encrypt_stream(io.BytesIO(plaintext), out, context)
        return out.getvalue()

    async def open(self, key: str, envelope: bytes, context: Mapping[str, str]) -> bytes:
        """The plaintext, only if the envelope carries every entry of `context`."""
        out = io.BytesIO()
        await Envelope(self._client, key).decrypt_stream(io.BytesIO(envelope), out, context)
        return out.getvalue()
