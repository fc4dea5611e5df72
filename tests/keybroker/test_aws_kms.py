"""The aws-kms backend against a real local endpoint speaking the KMS API over HTTP (moto in server mode,
started here on loopback, behind the recording stand-in of kms_stand_in.py), and the requests moto does not
implement (imports) validated against botocore's own KMS service model. The broker authorizes before any KMS
call: a refused caller costs KMS nothing, and every Decrypt names its key (KeyId)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3
import botocore.session
import grpc
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters
from google.protobuf.duration_pb2 import Duration

from privmesh.keybroker.backends import aws_kms
from privmesh.keybroker.policy import ADMIN_OPERATIONS
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.errors import read_error
from privmesh.sdk.keybroker.client import CRYPTO_OPERATIONS, allow
from tests.keybroker.conftest import ALICE, BOB
from tests.keybroker.kms_stand_in import KmsStandIn

POLICY = pb.KeyPolicy(statements=[allow([ALICE], [*ADMIN_OPERATIONS, *CRYPTO_OPERATIONS,
                                                  pb.KEY_OPERATION_RE_ENCRYPT_FROM, pb.KEY_OPERATION_RE_ENCRYPT_TO])])
CONTEXT = {"dataset": "claims"}
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def kms_endpoint(kms_stand_in: tuple[str, KmsStandIn]) -> str:
    return kms_stand_in[0]


@pytest.fixture
async def kms_broker(start_broker: Any, tmp_path: Any, kms_endpoint: str, aws_credentials: None) -> Any:
    return await start_broker(tmp_path, aws_kms={"region": REGION, "endpoint_url": kms_endpoint})


def _kms(endpoint: str) -> Any:
    return boto3.client("kms", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


async def _error(call: Any) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = read_error(caught.value)
    return error.code, error.reason


async def test_kms_keys_wrap_unwrap_rotate_and_re_encrypt(kms_broker: Any, kms_endpoint: str) -> None:
    key = await kms_broker.alice.create_key(alias="claims", policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    assert key.backend == pb.KEY_BACKEND_AWS_KMS and key.aws_kms_key_arn.startswith("arn:aws:kms:eu-west-1:")
    described = _kms(kms_endpoint).describe_key(KeyId=key.aws_kms_key_arn)["KeyMetadata"]
    assert described["KeyId"] == key.key_id and described["KeyState"] == "Enabled"
    plaintext, wrapped, _ = await kms_broker.alice.generate_data_key("aliases/claims", CONTEXT)
    assert len(plaintext) == 32
    # KMS's own CiphertextBlob: KMS itself opens it
    assert _kms(kms_endpoint).decrypt(CiphertextBlob=wrapped, EncryptionContext=CONTEXT)["Plaintext"] == plaintext
    assert await kms_broker.alice.decrypt(wrapped, CONTEXT, key=key.name) == plaintext
    assert await kms_broker.alice.decrypt(wrapped, CONTEXT, key="aliases/claims") == plaintext
    assert await _error(kms_broker.alice.decrypt(wrapped, {"dataset": "other"}, key=key.name)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CIPHERTEXT")
    rotated = await kms_broker.alice.rotate_key(key.name)
    assert rotated.primary_version == 2 and await kms_broker.alice.decrypt(wrapped, CONTEXT, key=key.name) == plaintext
    local = await kms_broker.alice.create_key(policy=POLICY)
    moved = await kms_broker.alice.re_encrypt(wrapped, local.name, CONTEXT, {"moved": "yes"}, source_key=key.name)
    assert moved[:4] == b"PMKB" and await kms_broker.alice.decrypt(moved, {"moved": "yes"}) == plaintext
    back = await kms_broker.alice.re_encrypt(moved, key.name, {"moved": "yes"}, CONTEXT)
    assert await kms_broker.alice.decrypt(back, CONTEXT, key=key.name) == plaintext
    other = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    across = await kms_broker.alice.re_encrypt(wrapped, other.name, CONTEXT, CONTEXT,  # KMS's own ReEncrypt
                                               source_key=key.name)
    assert await kms_broker.alice.decrypt(across, CONTEXT, key=other.name) == plaintext
    message = await kms_broker.alice.encrypt_message(key.name, b"claim 9", CONTEXT)
    assert await kms_broker.alice.decrypt_message(message) == b"claim 9"


async def test_a_refused_caller_costs_no_kms_decrypt(kms_broker: Any,
                                                     kms_stand_in: tuple[str, KmsStandIn]) -> None:
    stand_in = kms_stand_in[1]
    key = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    other = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    _, wrapped, _ = await kms_broker.alice.generate_data_key(key.name, CONTEXT)
    before = len(stand_in.operations("Decrypt")), len(stand_in.operations("ReEncrypt"))
    assert await _error(kms_broker.bob.decrypt(wrapped, CONTEXT, key=key.name)) == (
        grpc.StatusCode.PERMISSION_DENIED, "KEY_POLICY_DENIED")
    assert await _error(kms_broker.bob.re_encrypt(wrapped, other.name, CONTEXT, CONTEXT, source_key=key.name)) == (
        grpc.StatusCode.PERMISSION_DENIED, "KEY_POLICY_DENIED")
    # without a key name the broker cannot authorize without decrypting: it refuses, and asks KMS nothing
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kms_broker.bob.decrypt(wrapped, CONTEXT)
    error = read_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in error.violations] == ["key"]
    assert (len(stand_in.operations("Decrypt")), len(stand_in.operations("ReEncrypt"))) == before
    denied = [d["reason"] for p, op, _, outcome, d in kms_broker.audit() if outcome == "DENIED" and p == BOB]
    assert denied == ["KEY_POLICY_DENIED", "KEY_POLICY_DENIED"]


async def test_each_kms_decrypt_is_one_call_that_names_its_key(kms_broker: Any,
                                                               kms_stand_in: tuple[str, KmsStandIn]) -> None:
    stand_in = kms_stand_in[1]
    key = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    other = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    plaintext, wrapped, _ = await kms_broker.alice.generate_data_key(key.name, CONTEXT)
    before = len(stand_in.operations("Decrypt"))
    assert await kms_broker.alice.decrypt(wrapped, CONTEXT, key=key.name) == plaintext
    calls = stand_in.operations("Decrypt")[before:]
    assert len(calls) == 1 and calls[0]["KeyId"] == key.key_id and "Recipient" not in calls[0]
    # a blob of another key, named as `other`: KMS itself refuses it (IncorrectKeyException), in one call
    assert await _error(kms_broker.alice.decrypt(wrapped, CONTEXT, key=other.name)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CIPHERTEXT")
    assert [c["KeyId"] for c in stand_in.operations("Decrypt")[before + 1:]] == [other.key_id]


async def test_kms_states_follow_the_broker(kms_broker: Any, kms_endpoint: str) -> None:
    key = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS)
    _, wrapped, _ = await kms_broker.alice.generate_data_key(key.name, CONTEXT)
    await kms_broker.stub.DisableKey(pb.DisableKeyRequest(name=key.name))
    assert _kms(kms_endpoint).describe_key(KeyId=key.key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    await kms_broker.stub.EnableKey(pb.EnableKeyRequest(name=key.name))
    pending = await kms_broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(
        name=key.name, waiting_period=Duration(seconds=86400)))
    assert pending.key.state == pb.KEY_STATE_PENDING_DELETION
    kms_state = _kms(kms_endpoint).describe_key(KeyId=key.key_id)["KeyMetadata"]
    assert kms_state["KeyState"] == "PendingDeletion"  # KMS's window is at least 7 days, never shorter than ours
    await kms_broker.stub.CancelKeyDeletion(pb.CancelKeyDeletionRequest(name=key.name))
    assert _kms(kms_endpoint).describe_key(KeyId=key.key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    destroyed = await kms_broker.stub.ScheduleKeyDeletion(pb.ScheduleKeyDeletionRequest(
        name=key.name, waiting_period=Duration(seconds=0)))
    assert destroyed.key.state == pb.KEY_STATE_DESTROYED
    assert _kms(kms_endpoint).describe_key(KeyId=key.key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert await _error(kms_broker.alice.decrypt(wrapped, CONTEXT, key=key.name)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "KEY_DESTROYED")


async def test_operations_moto_lacks_are_refused_without_state_change(kms_broker: Any) -> None:
    key = await kms_broker.alice.create_key(policy=POLICY, backend=pb.KEY_BACKEND_AWS_KMS, external=True)
    assert key.state == pb.KEY_STATE_PENDING_IMPORT
    before = kms_broker.rows("keybroker_keys"), kms_broker.rows("keybroker_versions")
    # moto answers HTTP 500 for actions it lacks: a failing backend, refused as such (real KMS implements it)
    assert await _error(kms_broker.stub.GetImportParameters(pb.GetImportParametersRequest(key=key.name))) == (
        grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE")
    assert (kms_broker.rows("keybroker_keys"), kms_broker.rows("keybroker_versions")) == before


KMS_MODEL = botocore.session.get_session().get_service_model("kms")


def _validate(operation: str, params: dict[str, Any]) -> None:
    validate_parameters(params, KMS_MODEL.operation_model(operation).input_shape)


def test_recipient_and_import_requests_are_well_formed_for_kms() -> None:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    document = b"\x84" + b"\x00" * 100
    _validate("GenerateDataKey", aws_kms.generate_data_key_request(arn, CONTEXT, document))
    _validate("Decrypt", aws_kms.decrypt_request(arn, b"blob", CONTEXT, document))
    _validate("GetParametersForImport", aws_kms.import_parameters_request(arn))
    _validate("ImportKeyMaterial", aws_kms.import_material_request(arn, b"token", b"wrapped", None, False))
    _validate("ImportKeyMaterial", aws_kms.import_material_request(arn, b"token", b"wrapped",
                                                                   datetime(2031, 1, 1, tzinfo=timezone.utc), True))
    # the validation is real: a malformed Recipient is rejected by the same model
    bad = aws_kms.generate_data_key_request(arn, CONTEXT, document)
    bad["Recipient"]["AttestationDocument"] = "not bytes"
    bad["Recipient"]["Unknown"] = 1
    with pytest.raises(ParamValidationError):
        _validate("GenerateDataKey", bad)
