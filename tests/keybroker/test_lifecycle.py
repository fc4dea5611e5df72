"""Key lifecycle over real mTLS: rotation (old versions still decrypt), enable/disable, scheduled deletion with
real crypto-shredding, imported material with expiry, ReEncrypt, idempotent CreateKey/RotateKey, ListKeys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import read_error
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, allow
from tests.keybroker.conftest import ALICE, BOB, Broker

CONTEXT = {"dataset": "patients"}
EVERYTHING = pb.KeyPolicy(statements=[allow([ALICE], [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS,
                                                      pb.KEY_OPERATION_RE_ENCRYPT_FROM,
                                                      pb.KEY_OPERATION_RE_ENCRYPT_TO], "alice")])


async def _code(call: object) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = read_error(caught.value)
    return error.code, error.reason


async def test_rotation_encrypts_with_the_new_version_and_old_ones_still_decrypt(broker: Broker) -> None:
    key = await broker.alice.create_key(policy=EVERYTHING)
    _, old, v1 = await broker.alice.generate_data_key(key.name, CONTEXT)
    rotated = await broker.stub.RotateKey(pb.RotateKeyRequest(name=key.name))
    assert rotated.key.primary_version == 2 and rotated.version.version == 2 and rotated.version.primary
    plaintext, new, v2 = await broker.alice.generate_data_key(key.name, CONTEXT)
    assert (v1, v2) == (1, 2)
    assert len(await broker.alice.decrypt(old, CONTEXT)) == 32 and await broker.alice.decrypt(new, CONTEXT) == plaintext
    moved = await broker.stub.ReEncrypt(pb.ReEncryptRequest(ciphertext_blob=old, source_encryption_context=CONTEXT,
                                                            destination_key=key.name,
                                                            destination_encryption_context={"v": "2"}))
    assert (moved.source_key_version, moved.key_version) == (1, 2)
    assert await broker.alice.decrypt(moved.ciphertext_blob, {"v": "2"}) == await broker.alice.decrypt(old, CONTEXT)
    versions = await broker.stub.ListKeyVersions(pb.ListKeyVersionsRequest(key=key.name, page_size=1))
    assert [v.version for v in versions.versions] == [2] and versions.next_page_token
    rest = await broker.stub.ListKeyVersions(pb.ListKeyVersionsRequest(key=key.name,
                                                                       page_token=versions.next_page_token))
    assert [v.version for v in rest.versions] == [1] and not rest.next_page_token


async def test_request_ids_make_create_and_rotate_idempotent(broker: Broker) -> None:
    request_id = str(uuid.uuid4())
    first = await broker.alice.create_key(alias="idem", policy=EVERYTHING, request_id=request_id)
    again = await broker.alice.create_key(alias="idem", policy=EVERYTHING, request_id=request_id)
    assert again.name == first.name and len(broker.rows("keybroker_keys")) == 1
    assert await _code(broker.stub.CreateKey(pb.CreateKeyRequest(alias="other", request_id=request_id))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_CONFLICT")
    rotate_id = str(uuid.uuid4())
    one = await broker.stub.RotateKey(pb.RotateKeyRequest(name=first.name, request_id=rotate_id))
    two = await broker.stub.RotateKey(pb.RotateKeyRequest(name=first.name, request_id=rotate_id))
    assert one.version.version == two.version.version == 2 and two.key.primary_version == 2


async def test_disabled_key_refuses_cryptography_until_enabled(broker: Broker) -> None:
    key = await broker.alice.create_key(policy=EVERYTHING)
    _, wrapped, _ = await broker.alice.generate_data_key(key.name, CONTEXT)
    disabled = await broker.stub.DisableKey(pb.DisableKeyRequest(name=key.name))
    assert disabled.key.state == pb.KEY_STATE_DISABLED
    before = broker.rows("keybroker_keys")
    assert await _code(broker.alice.generate_data_key(key.name, CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_DISABLED")
    assert await _code(broker.alice.decrypt(wrapped, CONTEXT)) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_DISABLED")
    assert broker.rows("keybroker_keys") == before
    enabled = await broker.stub.EnableKey(pb.EnableKeyRequest(name=key.name))
    assert enabled.key.state == pb.KEY_STATE_ENABLED and len(await broker.alice.decrypt(wrapped, CONTEXT)) == 32


async def test_scheduled_deletion_destroys_the_material_and_data_becomes_unreadable(broker: Broker) -> None:
    key = await broker.alice.create_key(alias="doomed", policy=EVERYTHING)
    _, wrapped, _ = await broker.alice.generate_data_key(key.name, CONTEXT)
    keystore_before = (broker.tmp / "keystore.bin").read_bytes()
    pending = await broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(
        name=key.name, waiting_period=Duration(seconds=3600)))
    assert pending.key.state == pb.KEY_STATE_PENDING_DELETION and pending.key.HasField("deletion_time")
    assert await _code(broker.alice.decrypt(wrapped, CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_PENDING_DELETION")
    cancelled = await broker.stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(name=key.name))
    assert cancelled.key.state == pb.KEY_STATE_DISABLED
    await broker.stub.EnableKey(pb.EnableKeyRequest(name=key.name))
    assert len(await broker.alice.decrypt(wrapped, CONTEXT)) == 32
    gone = await broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(name=key.name,
                                                                               waiting_period=Duration(seconds=0)))
    assert gone.key.state == pb.KEY_STATE_DESTROYED and gone.key.HasField("destroy_time")
    assert await _code(broker.alice.decrypt(wrapped, CONTEXT)) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                                   "KEY_DESTROYED")
    assert await _code(broker.stub.EnableKey(pb.EnableKeyRequest(name=key.name))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_DESTROYED")
    # The material is gone from the keystore: even the root key cannot bring it back.
    from privmesh.keybroker.keystore import Keystore

    root = (broker.tmp / "root-key.bin").read_bytes()
    assert Keystore(broker.tmp / "keystore.bin", root).get(f"{key.key_id}/1") is None
    assert (broker.tmp / "keystore.bin").read_bytes() != keystore_before
    assert ("system", "DestroyKey") in [(p, op) for p, op, *_ in broker.audit()]
    reused = await broker.alice.create_key(alias="doomed", policy=EVERYTHING)  # a destroyed key frees its alias
    assert reused.name != key.name


async def test_waiting_period_below_the_minimum_is_refused(start_broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = await start_broker(tmp_path, min_deletion_waiting_seconds=7 * 86400)
    key = await broker.alice.create_key(policy=EVERYTHING)
    before = broker.rows("keybroker_keys")
    assert await _code(broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(
        name=key.name, waiting_period=Duration(seconds=3600)))) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert broker.rows("keybroker_keys") == before


async def test_due_deletion_is_applied_by_the_sweeper(start_broker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broker = await start_broker(tmp_path, sweep_seconds=0.2)
    key = await broker.alice.create_key(policy=EVERYTHING)
    await broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(name=key.name,
                                                                        waiting_period=Duration(nanos=300_000_000)))
    for _ in range(50):
        states = [row for row in broker.rows("keybroker_keys") if row[1] == key.key_id]
        if states[0][6] == pb.KEY_STATE_DESTROYED:
            break
        await asyncio.sleep(0.1)
    assert states[0][6] == pb.KEY_STATE_DESTROYED  # without any call naming the key


def _wrap_material(public_der: bytes, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    return public.encrypt(material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                 label=None))  # type: ignore[union-attr]


@pytest.mark.slow
async def test_imported_material_expires_and_can_be_reimported(broker: Broker) -> None:
    key = await broker.alice.create_key(policy=EVERYTHING, external=True)
    assert key.state == pb.KEY_STATE_PENDING_IMPORT and key.primary_version == 0
    assert await _code(broker.alice.generate_data_key(key.name, CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_PENDING_IMPORT")
    params = await broker.stub.GetImportParameters(pb.GetImportParametersRequest(key=key.name))
    material = b"\x42" * 32
    expire = Timestamp()
    expire.FromDatetime(datetime.now(timezone.utc) + timedelta(seconds=2))
    imported = await broker.stub.ImportKeyMaterial(pb.ImportKeyMaterialRequest(
        key=key.name, import_token=params.import_token,
        encrypted_key_material=_wrap_material(params.public_key, material), expire_time=expire))
    assert imported.key.state == pb.KEY_STATE_ENABLED and imported.version.version == 1
    assert imported.key.HasField("material_expire_time")
    _, wrapped, _ = await broker.alice.generate_data_key(key.name, CONTEXT)
    other = b"\x43" * 32
    before = broker.rows("keybroker_versions")
    assert await _code(broker.stub.ImportKeyMaterial(pb.ImportKeyMaterialRequest(
        key=key.name, import_token=params.import_token,
        encrypted_key_material=_wrap_material(params.public_key, other)))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "KEY_MATERIAL_MISMATCH")
    assert await _code(broker.stub.ImportKeyMaterial(pb.ImportKeyMaterialRequest(
        key=key.name, import_token=params.import_token[:-1] + b"\x00",
        encrypted_key_material=_wrap_material(params.public_key, material)))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "IMPORT_TOKEN_INVALID")
    assert broker.rows("keybroker_versions") == before
    await asyncio.sleep(2.2)
    assert await _code(broker.alice.decrypt(wrapped, CONTEXT)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_PENDING_IMPORT")
    again = await broker.stub.ImportKeyMaterial(pb.ImportKeyMaterialRequest(
        key=key.name, import_token=params.import_token,
        encrypted_key_material=_wrap_material(params.public_key, material)))
    assert again.key.state == pb.KEY_STATE_ENABLED and not again.key.HasField("material_expire_time")
    assert len(await broker.alice.decrypt(wrapped, CONTEXT)) == 32
    deleted = await broker.stub.DeleteImportedKeyMaterial(pb.DeleteImportedKeyMaterialRequest(key=key.name))
    assert deleted.key.state == pb.KEY_STATE_PENDING_IMPORT
    assert await _code(broker.stub.RotateKey(pb.RotateKeyRequest(name=key.name))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "ORIGIN_MISMATCH")


async def test_update_policy_lockout_and_listing(broker: Broker) -> None:
    key = await broker.alice.create_key(alias="one", policy=EVERYTHING)
    await broker.alice.create_key(alias="two", policy=EVERYTHING)
    await broker.bob.create_key(alias="bobs")
    updated = await broker.stub.UpdateKey(pb.UpdateKeyRequest(
        key=pb.Key(name=key.name, description="patients", rotation_period=Duration(seconds=90 * 86400)),
        update_mask=FieldMask(paths=["description", "rotation_period"]), etag=key.etag))
    assert updated.key.description == "patients" and updated.key.HasField("next_rotation_time")
    assert await _code(broker.stub.UpdateKey(pb.UpdateKeyRequest(
        key=pb.Key(name=key.name, description="x"), update_mask=FieldMask(paths=["description"]), etag=key.etag))) == (
        grpc.StatusCode.ABORTED, "ETAG_MISMATCH")
    assert await _code(broker.stub.UpdateKey(pb.UpdateKeyRequest(
        key=pb.Key(name=key.name, alias="two"), update_mask=FieldMask(paths=["alias"])))) == (
        grpc.StatusCode.ALREADY_EXISTS, "ALIAS_ALREADY_EXISTS")
    current = await broker.stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key=key.name))
    lockout = pb.KeyPolicy(statements=[allow([BOB], [pb.KEY_OPERATION_PUT_KEY_POLICY])])
    assert await _code(broker.stub.PutKeyPolicy(pb.PutKeyPolicyRequest(key=key.name, policy=lockout))) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_POLICY_LOCKOUT")
    assert (await broker.stub.GetKeyPolicy(pb.GetKeyPolicyRequest(key=key.name))).policy.etag == current.policy.etag
    page = await broker.stub.ListKeys(pb.ListKeysRequest(page_size=1))
    rest = await broker.stub.ListKeys(pb.ListKeysRequest(page_token=page.next_page_token))
    assert [k.alias for k in page.keys] + [k.alias for k in rest.keys] == ["one", "two"]  # not bob's key
    assert [k.alias for k in (await broker.bob_stub.ListKeys(pb.ListKeysRequest())).keys] == ["bobs"]
