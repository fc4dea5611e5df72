"""Data keys over real mTLS: CreateKey/GetKey, GenerateDataKey (with and without plaintext), Decrypt with the
encryption context as AAD, the key policy on every call, the typed client, and audit without key material."""

from __future__ import annotations

import grpc
import pytest

from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import read_error
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, allow
from tests.keybroker.conftest import ALICE, BOB, Broker

CONTEXT = {"tenant": "hospital-a", "purpose": "records"}


def crypto_for(*principals: str) -> pb.KeyPolicy:
    return pb.KeyPolicy(statements=[
        allow([ALICE], [pb.KEY_OPERATION_DESCRIBE, pb.KEY_OPERATION_PUT_KEY_POLICY, pb.KEY_OPERATION_GET_KEY_POLICY],
              "admin"),
        allow(principals, CRYPTO_OPERATIONS, "use")])


async def test_data_key_round_trip_binds_the_context(broker: Broker) -> None:
    key = await broker.alice.create_key(alias="records", description="records", policy=crypto_for(ALICE))
    assert key.name == f"keys/{key.key_id}" and key.state == pb.KEY_STATE_ENABLED and key.primary_version == 1
    assert key.backend == pb.KEY_BACKEND_LOCAL
    fetched = await broker.alice.get_key("aliases/records")
    assert fetched.name == key.name and fetched.etag == key.etag
    plaintext, wrapped, version = await broker.alice.generate_data_key("aliases/records", CONTEXT)
    assert len(plaintext) == 32 and version == 1 and plaintext not in wrapped
    assert await broker.alice.decrypt(wrapped, CONTEXT) == plaintext
    assert await broker.alice.decrypt(wrapped, CONTEXT, key=key.name) == plaintext
    for wrong in ({}, {**CONTEXT, "tenant": "hospital-b"}, {**CONTEXT, "extra": "x"}):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await broker.alice.decrypt(wrapped, wrong)
        error = read_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT and error.reason == "INVALID_CIPHERTEXT"
        assert error.domain == "keybroker.privmesh.dev"
    wrapped_only, version = await broker.alice.generate_data_key_without_plaintext(key.name, CONTEXT)
    assert version == 1 and len(await broker.alice.decrypt(wrapped_only, CONTEXT)) == 32


async def test_tampered_blob_and_blob_of_another_key_are_refused(broker: Broker) -> None:
    one = await broker.alice.create_key(policy=crypto_for(ALICE))
    other = await broker.alice.create_key(policy=crypto_for(ALICE))
    _, wrapped, _ = await broker.alice.generate_data_key(one.name, CONTEXT)
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    for blob, key in ((bytes(tampered), ""), (wrapped, other.name), (b"garbage", ""), (wrapped[:30], "")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await broker.alice.decrypt(blob, CONTEXT, key=key)
        assert read_error(caught.value).reason == "INVALID_CIPHERTEXT"


async def test_policy_is_deny_by_default_and_evaluated_per_principal(broker: Broker) -> None:
    admin_only = await broker.alice.create_key()  # default policy: the creator administers, nobody encrypts
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await broker.alice.generate_data_key(admin_only.name, CONTEXT)
    error = read_error(caught.value)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED and error.reason == "KEY_POLICY_DENIED"
    assert error.metadata["operation"] == "GENERATE_DATA_KEY"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await broker.bob.get_key(admin_only.name)
    assert read_error(caught.value).reason == "KEY_POLICY_DENIED"
    shared = await broker.alice.create_key(policy=crypto_for(ALICE, BOB))
    _, wrapped, _ = await broker.alice.generate_data_key(shared.name, CONTEXT)
    assert len(await broker.bob.decrypt(wrapped, CONTEXT)) == 32
    denied = [(p, op, outcome, d["reason"]) for p, op, _, outcome, d in broker.audit() if outcome == "DENIED"]
    assert denied == [(ALICE, "GenerateDataKey", "DENIED", "KEY_POLICY_DENIED"),
                      (BOB, "GetKey", "DENIED", "KEY_POLICY_DENIED")]


async def test_every_key_operation_is_audited_without_key_material(broker: Broker) -> None:
    key = await broker.alice.create_key(policy=crypto_for(ALICE))
    plaintext, wrapped, _ = await broker.alice.generate_data_key(key.name, CONTEXT)
    await broker.alice.decrypt(wrapped, CONTEXT)
    entries = [(p, op, resource, d.get("key_version"), d.get("context_keys")) for p, op, resource, _, d
               in broker.audit()]
    assert entries == [(ALICE, "CreateKey", key.name, None, None),
                       (ALICE, "GenerateDataKey", key.name, "1", "purpose,tenant"),
                       (ALICE, "Decrypt", key.name, "1", "purpose,tenant")]
    raw = (broker.tmp / "audit.db").read_bytes()
    assert plaintext not in raw and plaintext.hex().encode() not in raw and b"hospital-a" not in raw
    keystore = (broker.tmp / "keystore.bin").read_bytes()
    assert plaintext not in keystore and keystore[:5] == b"PMKS1"


async def test_bad_input_gets_its_code_and_changes_nothing(broker: Broker) -> None:
    key = await broker.alice.create_key(alias="k", policy=crypto_for(ALICE))
    before = (broker.rows("keybroker_keys"), broker.rows("keybroker_versions"), len(broker.audit()))
    cases = [
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key="keys/nope")), grpc.StatusCode.NOT_FOUND,
         "KEY_NOT_FOUND"),
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key="nope")), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_FIELD"),
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=key.name, encryption_context={
            f"k{i}": "v" for i in range(33)})), grpc.StatusCode.INVALID_ARGUMENT, "ENCRYPTION_CONTEXT_INVALID"),
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=key.name, encryption_context={
            "big": "x" * 9000})), grpc.StatusCode.INVALID_ARGUMENT, "ENCRYPTION_CONTEXT_INVALID"),
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=key.name, encryption_context={
            "aws-crypto-public-key": "x"})), grpc.StatusCode.INVALID_ARGUMENT, "ENCRYPTION_CONTEXT_INVALID"),
        (broker.stub.GenerateDataKey(pb.GenerateDataKeyRequest(key=key.name, key_spec=7)),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (broker.stub.Decrypt(pb.DecryptRequest(ciphertext_blob=b"x" * 7000)), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_FIELD"),
        (broker.stub.Decrypt(pb.DecryptRequest()), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (broker.stub.CreateKey(pb.CreateKeyRequest(alias="k")), grpc.StatusCode.ALREADY_EXISTS,
         "ALIAS_ALREADY_EXISTS"),
        (broker.stub.CreateKey(pb.CreateKeyRequest(alias="bad alias!")), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_FIELD"),
        (broker.stub.CreateKey(pb.CreateKeyRequest(policy=pb.KeyPolicy(statements=[pb.PolicyStatement(
            effect=pb.POLICY_EFFECT_ALLOW, principals=["mallory"], operations=[99])]))),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),  # the runtime refuses an undeclared enum value
    ]
    for call, code, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        error = read_error(caught.value)
        assert (error.code, error.reason) == (code, reason), error
    assert (broker.rows("keybroker_keys"), broker.rows("keybroker_versions"), len(broker.audit())) == before
