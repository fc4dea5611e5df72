"""Encryption SDK messages: EncryptMessage/DecryptMessage under REQUIRE_ENCRYPT_REQUIRE_DECRYPT, the SDK's
envelope helpers on streams and files (interoperable with the broker's messages), and data-key caching."""

from __future__ import annotations

import io
import os
from pathlib import Path

import grpc
import pytest
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import read_error
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, allow
from privmesh.sdk.keybroker.envelope import Envelope
from tests.keybroker.conftest import ALICE, BOB, Broker

CONTEXT = {"dataset": "patients", "site": "a"}
POLICY = pb.KeyPolicy(statements=[allow([ALICE], [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS], "alice"),
                                  allow([BOB], [pb.KEY_OPERATION_DECRYPT], "bob-site-a", pb.PolicyConditions(
                                      encryption_context_equals={"site": "a"}))])


def _edk(message: bytes) -> bytes:
    header, _ = deserialize_header(io.BytesIO(message))
    [edk] = header.encrypted_data_keys
    return bytes(edk.encrypted_data_key)


async def test_messages_round_trip_and_bind_their_context(broker: Broker) -> None:
    key = await broker.alice.create_key(policy=POLICY)
    for suite in (pb.MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
                  pb.MESSAGE_ALGORITHM_SUITE_UNSPECIFIED):
        reply = await broker.stub.EncryptMessage(pb.EncryptMessageRequest(key=key.name, plaintext=b"record 1",
                                                                          encryption_context=CONTEXT,
                                                                          algorithm_suite=suite, frame_length=128))
        assert reply.key_version == 1 and b"record 1" not in reply.ciphertext
        opened = await broker.stub.DecryptMessage(pb.DecryptMessageRequest(ciphertext=reply.ciphertext,
                                                                           encryption_context={"site": "a"}))
        assert opened.plaintext == b"record 1" and opened.key == key.name
        assert {k: v for k, v in opened.encryption_context.items() if not k.startswith("aws-crypto-")} == CONTEXT
        assert opened.algorithm_suite == reply.algorithm_suite
    # bob may decrypt only site-a messages (a policy condition on the context)
    assert await broker.bob.decrypt_message(reply.ciphertext) == b"record 1"
    other = await broker.alice.encrypt_message(key.name, b"record 2", {"dataset": "patients", "site": "b"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await broker.bob.decrypt_message(other)
    assert read_error(caught.value).reason == "KEY_POLICY_DENIED"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await broker.alice.decrypt_message(reply.ciphertext, {"site": "b"})
    assert read_error(caught.value).reason == "INVALID_CIPHERTEXT"
    tampered = bytearray(reply.ciphertext)
    tampered[-40] ^= 1
    for bad in (bytes(tampered), b"not a message", reply.ciphertext[:-10]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await broker.alice.decrypt_message(bad)
        assert read_error(caught.value).reason == "INVALID_CIPHERTEXT"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await broker.alice.encrypt_message(key.name, b"x" * (1024 * 1024 + 1))
    assert read_error(caught.value).reason == "PAYLOAD_TOO_LARGE"


async def test_envelope_helpers_stream_files_and_interoperate(broker: Broker, tmp_path: Path) -> None:
    key = await broker.alice.create_key(policy=POLICY)
    envelope = Envelope(broker.alice, key.name, frame_length=4096)
    data = os.urandom(300_000)
    source, sealed, opened = tmp_path / "in.bin", tmp_path / "in.bin.enc", tmp_path / "out.bin"
    source.write_bytes(data)
    written = await envelope.encrypt_file(source, sealed, CONTEXT)
    assert written == sealed.stat().st_size > len(data) and data[:64] not in sealed.read_bytes()
    context = await envelope.decrypt_file(sealed, opened, {"site": "a"})
    assert opened.read_bytes() == data and context["dataset"] == "patients"
    # the broker opens what the helpers made
    small = io.BytesIO()
    await envelope.encrypt_stream(io.BytesIO(b"hello"), small, CONTEXT)
    assert await broker.alice.decrypt_message(small.getvalue()) == b"hello"
    # the helpers open what the broker made
    made = await broker.alice.encrypt_message(key.name, b"from the broker", CONTEXT)
    out = io.BytesIO()
    await Envelope(broker.alice, key.name).decrypt_stream(io.BytesIO(made), out)
    assert out.getvalue() == b"from the broker"
    with pytest.raises(Exception, match="required entry"):
        await envelope.decrypt_file(sealed, tmp_path / "refused.bin", {"site": "b"})
    assert not (tmp_path / "refused.bin").exists()


async def test_data_key_caching_is_off_by_default_and_bounded(broker: Broker) -> None:
    plain = await broker.alice.create_key(policy=POLICY)
    one = await broker.alice.encrypt_message(plain.name, b"a", CONTEXT)
    two = await broker.alice.encrypt_message(plain.name, b"b", CONTEXT)
    assert _edk(one) != _edk(two)
    cached = await broker.alice.create_key(policy=POLICY, caching=pb.DataKeyCaching(
        max_age=Duration(seconds=60), max_messages=2))
    reply = await broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=cached.name))
    assert reply.caching.max_messages == 2 and reply.caching.max_age.seconds == 60
    messages = [await broker.alice.encrypt_message(cached.name, b"m", CONTEXT) for _ in range(3)]
    assert _edk(messages[0]) == _edk(messages[1]) != _edk(messages[2])  # reused once, then a fresh data key
    assert await broker.alice.decrypt_message(messages[1]) == b"m"
    reused = [d.get("data_key_reused") for _, op, _, _, d in broker.audit() if op == "EncryptMessage"]
    assert reused[-3:] == ["false", "true", "false"]
