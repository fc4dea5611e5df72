"""KeyBroker over gRPC: translates protobuf <-> the domain service and validates request shapes."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta, timezone

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from privmesh.keybroker.release import MAX_DOCUMENT, Evidence
from privmesh.keybroker.service import DataKeyResult, KeyBrokerService
from privmesh.keybroker.store import Caching, KeyRecord
from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.keybroker.v1 import keybroker_pb2_grpc
from privmesh.runtime.context import CallContext
from privmesh.runtime.errors import InvalidArgument, Violations
from privmesh.runtime.paging import decode_token, encode_token, page_size

ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,63}$")
BACKENDS = {pb.KEY_BACKEND_LOCAL: "local", pb.KEY_BACKEND_AWS_KMS: "aws-kms"}
BACKEND_ENUM = {v: k for k, v in BACKENDS.items()}
MIN_ROTATION = timedelta(days=90)
MAX_ROTATION = timedelta(days=2560)
MAX_CACHE_AGE = timedelta(hours=24)
MAX_MESSAGES = 2**32
MAX_BYTES = 2**63 - 1
UPDATABLE = {"alias", "description", "rotation_period", "data_key_caching"}
SUITE_NAMES = {
    pb.MESSAGE_ALGORITHM_SUITE_UNSPECIFIED: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
    pb.MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
    pb.MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384:
        "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
}
SUITE_ENUM = {
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY": pb.MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
    "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384":
        pb.MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
}


def _ts_us(micros: int | None) -> Timestamp | None:
    return None if micros is None else Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _duration_us(micros: int | None) -> Duration | None:
    return None if micros is None else Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def caching_to_proto(caching: Caching | None) -> pb.DataKeyCaching | None:
    if caching is None:
        return None
    return pb.DataKeyCaching(max_age=_duration_us(caching.max_age_us), max_messages=caching.max_messages,
                             max_bytes=caching.max_bytes)


def key_to_proto(record: KeyRecord) -> pb.Key:
    primary = record.version(record.primary_version)
    return pb.Key(
        name=record.name, key_id=record.key_id, alias=record.alias, description=record.description,
        backend=BACKEND_ENUM[record.backend], origin=pb.KeyOrigin.Name(record.origin), key_spec=pb.KEY_SPEC_AES_256,
        state=pb.KeyState.Name(record.state),
        primary_version=record.primary_version, rotation_period=_duration_us(record.rotation_period_us),
        next_rotation_time=_ts_us(record.next_rotation_us), data_key_caching=caching_to_proto(record.caching),
        deletion_time=_ts_us(record.deletion_us),
        material_expire_time=_ts_us(primary.material_expire_us if primary else None),
        aws_kms_key_arn=record.arn, create_time=_ts_us(record.create_us), update_time=_ts_us(record.update_us),
        destroy_time=_ts_us(record.destroy_us), etag=record.etag)


def version_to_proto(record: KeyRecord, number: int) -> pb.KeyVersion:
    version = record.version(number)
    assert version is not None
    return pb.KeyVersion(name=f"{record.name}/versions/{number}", version=number,
                         state=pb.KeyVersionState.Name(version.state),
                         primary=number == record.primary_version, create_time=_ts_us(version.create_us),
                         material_expire_time=_ts_us(version.material_expire_us),
                         destroy_time=_ts_us(version.destroy_us))


def _fingerprint(request: Message) -> str:
    """What identifies a request for idempotency: its content without the request_id."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(type(request).__name__.encode() + copy.SerializeToString(deterministic=True)).hexdigest()


def _request(request: Message) -> tuple[str, str] | None:
    # Every idempotent request message has a request_id field; Message, their common type, does not declare it.
    request_id: str = request.request_id  # type: ignore[attr-defined]
    if not request_id:  # the runtime has checked that a given one is a UUID
        return None
    return request_id, _fingerprint(request)


def _rotation(msg: Duration, field: str, present: bool) -> timedelta | None:
    if not present:
        return None
    period = msg.ToTimedelta()
    if not MIN_ROTATION <= period <= MAX_ROTATION:
        raise InvalidArgument.single(field, f"must be between {MIN_ROTATION.days} and {MAX_ROTATION.days} days")
    return period


def _caching(msg: pb.DataKeyCaching, field: str, present: bool) -> Caching | None:
    if not present:
        return None
    bad = Violations()
    age = msg.max_age.ToTimedelta()
    bad.check(msg.HasField("max_age") and timedelta(0) < age <= MAX_CACHE_AGE, f"{field}.max_age",
              "required, positive, at most 24 hours")
    bad.check(msg.max_messages <= MAX_MESSAGES, f"{field}.max_messages", f"at most {MAX_MESSAGES}")
    bad.check(msg.max_bytes <= MAX_BYTES, f"{field}.max_bytes", f"at most {MAX_BYTES}")
    bad.raise_if_any()
    return Caching(age // timedelta(microseconds=1), msg.max_messages or MAX_MESSAGES, msg.max_bytes or MAX_BYTES)


def _evidence(recipient: pb.Recipient, present: bool) -> Evidence | None:
    if not present:
        return None
    which = recipient.WhichOneof("evidence")
    if which is None:
        raise InvalidArgument.single("recipient", "attestation_document or attestation_result_token is required")
    if which == "attestation_document" and not 0 < len(recipient.attestation_document) <= MAX_DOCUMENT:
        raise InvalidArgument.single("recipient.attestation_document", f"1..{MAX_DOCUMENT} bytes required")
    if which == "attestation_result_token" and not 0 < len(recipient.attestation_result_token) <= 16 * 1024:
        raise InvalidArgument.single("recipient.attestation_result_token", "1..16384 characters required")
    if len(recipient.public_key) > 2048:
        raise InvalidArgument.single("recipient.public_key", "at most 2048 bytes")
    if recipient.key_encryption_algorithm not in (pb.KEY_ENCRYPTION_ALGORITHM_UNSPECIFIED,
                                                  pb.KEY_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256):
        raise InvalidArgument.single("recipient.key_encryption_algorithm", "only RSAES_OAEP_SHA_256")
    if which == "attestation_document":
        return Evidence(recipient.attestation_document, None, recipient.public_key)
    return Evidence(None, recipient.attestation_result_token, recipient.public_key)


def _data_key_spec(spec: int) -> None:
    if spec not in (pb.DATA_KEY_SPEC_UNSPECIFIED, pb.DATA_KEY_SPEC_AES_256):
        raise InvalidArgument.single("key_spec", "only AES_256")


def _format(result: DataKeyResult) -> pb.RecipientCiphertextFormat | None:
    if result.recipient is None:
        return None
    cms = pb.RECIPIENT_CIPHERTEXT_FORMAT_CMS_ENVELOPED_DATA
    return cms if result.cms else pb.RECIPIENT_CIPHERTEXT_FORMAT_RSAES_OAEP


def _attested(result: DataKeyResult) -> pb.AttestedRecipient | None:
    r = result.recipient
    if r is None:
        return None
    return pb.AttestedRecipient(module_id=r.module_id, document_sha256=r.document_sha256,
                                verifier_policy=r.verifier_policy, public_key_sha256=r.public_key_sha256)


class KeyBrokerServicer(keybroker_pb2_grpc.KeyBrokerServicer):
    def __init__(self, service: KeyBrokerService) -> None:
        self._service = service

    async def CreateKey(self, request: pb.CreateKeyRequest, context: CallContext) -> pb.CreateKeyResponse:
        bad = Violations()
        bad.check(not request.alias or bool(ALIAS.match(request.alias)), "alias",
                  "letters, digits, '-' and '_', 1..63 characters")
        bad.check(len(request.description) <= 1024, "description", "at most 1024 characters")
        bad.check(request.backend in (pb.KEY_BACKEND_UNSPECIFIED, *BACKENDS), "backend", "not a KeyBackend")
        bad.check(request.origin in pb.KeyOrigin.values(), "origin", "not a KeyOrigin")
        bad.check(request.key_spec in (pb.KEY_SPEC_UNSPECIFIED, pb.KEY_SPEC_AES_256), "key_spec", "only AES_256")
        bad.raise_if_any()
        key = await self._service.create_key(
            request.alias, request.description, BACKENDS.get(request.backend),
            request.origin == pb.KEY_ORIGIN_EXTERNAL, request.policy if request.HasField("policy") else None,
            _rotation(request.rotation_period, "rotation_period", request.HasField("rotation_period")),
            _caching(request.data_key_caching, "data_key_caching", request.HasField("data_key_caching")),
            _request(request))
        return pb.CreateKeyResponse(key=key_to_proto(key))

    async def GetKey(self, request: pb.GetKeyRequest, context: CallContext) -> pb.GetKeyResponse:
        return pb.GetKeyResponse(key=key_to_proto(await self._service.get_key(request.name)))

    async def ListKeys(self, request: pb.ListKeysRequest, context: CallContext) -> pb.ListKeysResponse:
        limit = page_size(request.page_size, 50, 500)
        after = int(decode_token(request.page_token, int) or 0)
        if request.backend not in (pb.KEY_BACKEND_UNSPECIFIED, *BACKENDS):
            raise InvalidArgument.single("backend", "not a KeyBackend")
        keys, next_seq = await self._service.list_keys(after, limit, BACKENDS.get(request.backend),
                                                       request.show_destroyed)
        return pb.ListKeysResponse(keys=[key_to_proto(k) for k in keys],
                                   next_page_token="" if next_seq is None else encode_token(next_seq))

    async def UpdateKey(self, request: pb.UpdateKeyRequest, context: CallContext) -> pb.UpdateKeyResponse:
        mask = set(request.update_mask.paths)
        if not mask or not mask <= UPDATABLE:
            raise InvalidArgument.single("update_mask", f"required; any of {', '.join(sorted(UPDATABLE))}")
        key = request.key
        bad = Violations()
        bad.check("alias" not in mask or not key.alias or bool(ALIAS.match(key.alias)), "key.alias",
                  "letters, digits, '-' and '_', 1..63 characters")
        bad.check(len(key.description) <= 1024, "key.description", "at most 1024 characters")
        bad.raise_if_any()
        record = await self._service.update_key(
            key.name, mask, key.alias, key.description,
            _rotation(key.rotation_period, "key.rotation_period", key.HasField("rotation_period")),
            _caching(key.data_key_caching, "key.data_key_caching", key.HasField("data_key_caching")), request.etag)
        return pb.UpdateKeyResponse(key=key_to_proto(record))

    async def RotateKey(self, request: pb.RotateKeyRequest, context: CallContext) -> pb.RotateKeyResponse:
        record, version = await self._service.rotate_key(request.name, _request(request))
        return pb.RotateKeyResponse(key=key_to_proto(record), version=version_to_proto(record, version))

    async def ListKeyVersions(self, request: pb.ListKeyVersionsRequest,
                              context: CallContext) -> pb.ListKeyVersionsResponse:
        limit = page_size(request.page_size, 50, 500)
        before = decode_token(request.page_token, int)
        record = await self._service.get_key(request.key)
        numbers = sorted((v.version for v in record.versions if before is None or v.version < int(before)),
                         reverse=True)
        page = numbers[:limit]
        token = encode_token(page[-1]) if len(numbers) > limit else ""
        return pb.ListKeyVersionsResponse(versions=[version_to_proto(record, n) for n in page], next_page_token=token)

    async def EnableKey(self, request: pb.EnableKeyRequest, context: CallContext) -> pb.EnableKeyResponse:
        return pb.EnableKeyResponse(key=key_to_proto(await self._service.enable_key(request.name)))

    async def DisableKey(self, request: pb.DisableKeyRequest,
                         context: CallContext) -> pb.DisableKeyResponse:
        return pb.DisableKeyResponse(key=key_to_proto(await self._service.disable_key(request.name)))

    async def ScheduleKeyDeletion(self, request: pb.ScheduleKeyDeletionRequest,
                                  context: CallContext) -> pb.ScheduleKeyDeletionResponse:
        waiting = request.waiting_period.ToTimedelta() if request.HasField("waiting_period") else None
        return pb.ScheduleKeyDeletionResponse(key=key_to_proto(
            await self._service.schedule_deletion(request.name, waiting)))

    async def CancelKeyDeletion(self, request: pb.CancelKeyDeletionRequest,
                                context: CallContext) -> pb.CancelKeyDeletionResponse:
        return pb.CancelKeyDeletionResponse(key=key_to_proto(await self._service.cancel_deletion(request.name)))

    async def GetImportParameters(self, request: pb.GetImportParametersRequest,
                                  context: CallContext) -> pb.GetImportParametersResponse:
        if request.wrapping_algorithm not in (pb.WRAPPING_ALGORITHM_UNSPECIFIED,
                                              pb.WRAPPING_ALGORITHM_RSAES_OAEP_SHA_256):
            raise InvalidArgument.single("wrapping_algorithm", "only RSAES_OAEP_SHA_256")
        record, params = await self._service.import_parameters(request.key)
        expire = Timestamp()
        expire.FromDatetime(params.expire_time)
        return pb.GetImportParametersResponse(key=record.name, public_key=params.public_key,
                                              import_token=params.import_token, expire_time=expire)

    async def ImportKeyMaterial(self, request: pb.ImportKeyMaterialRequest,
                                context: CallContext) -> pb.ImportKeyMaterialResponse:
        bad = Violations()
        bad.check(0 < len(request.import_token) <= 8 * 1024, "import_token", "1..8192 bytes required")
        bad.check(0 < len(request.encrypted_key_material) <= 1024, "encrypted_key_material", "1..1024 bytes required")
        expire = request.expire_time.ToDatetime(timezone.utc) if request.HasField("expire_time") else None
        if expire is not None:
            from privmesh.keybroker.store import now_us

            bad.check(expire.timestamp() * 1e6 > now_us(), "expire_time", "must be in the future")
        bad.raise_if_any()
        record, version = await self._service.import_material(request.key, request.import_token,
                                                              request.encrypted_key_material, expire,
                                                              request.new_version)
        return pb.ImportKeyMaterialResponse(key=key_to_proto(record), version=version_to_proto(record, version))

    async def DeleteImportedKeyMaterial(self, request: pb.DeleteImportedKeyMaterialRequest,
                                        context: CallContext) -> pb.DeleteImportedKeyMaterialResponse:
        return pb.DeleteImportedKeyMaterialResponse(key=key_to_proto(await self._service.delete_imported(request.key)))

    async def PutKeyPolicy(self, request: pb.PutKeyPolicyRequest,
                           context: CallContext) -> pb.PutKeyPolicyResponse:
        record, etag, updated = await self._service.put_policy(request.key, request.policy, request.etag,
                                                               request.bypass_policy_lockout_safety_check)
        return pb.PutKeyPolicyResponse(policy=pb.KeyPolicy(key=record.name, statements=request.policy.statements,
                                                           etag=etag, update_time=_ts_us(updated)))

    async def GetKeyPolicy(self, request: pb.GetKeyPolicyRequest,
                           context: CallContext) -> pb.GetKeyPolicyResponse:
        record, policy, etag, updated = await self._service.get_policy(request.key)
        return pb.GetKeyPolicyResponse(policy=pb.KeyPolicy(key=record.name, statements=policy.statements, etag=etag,
                                                           update_time=_ts_us(updated)))

    async def GenerateDataKey(self, request: pb.GenerateDataKeyRequest,
                              context: CallContext) -> pb.GenerateDataKeyResponse:
        _data_key_spec(request.key_spec)
        evidence = _evidence(request.recipient, request.HasField("recipient"))
        result = await self._service.generate_data_key(request.key, dict(request.encryption_context), evidence)
        return pb.GenerateDataKeyResponse(
            key=result.key.name, key_version=result.version, plaintext=result.plaintext,
            ciphertext_blob=result.blob, ciphertext_for_recipient=result.for_recipient,
            ciphertext_format=_format(result),
            recipient=_attested(result),
            caching=caching_to_proto(result.key.caching) if not result.recipient else None)

    async def GenerateDataKeyWithoutPlaintext(
            self, request: pb.GenerateDataKeyWithoutPlaintextRequest,
            context: CallContext) -> pb.GenerateDataKeyWithoutPlaintextResponse:
        _data_key_spec(request.key_spec)
        result = await self._service.generate_data_key(request.key, dict(request.encryption_context), None,
                                                       with_plaintext=False)
        return pb.GenerateDataKeyWithoutPlaintextResponse(key=result.key.name, key_version=result.version,
                                                          ciphertext_blob=result.blob)

    async def Decrypt(self, request: pb.DecryptRequest, context: CallContext) -> pb.DecryptResponse:
        evidence = _evidence(request.recipient, request.HasField("recipient"))
        result = await self._service.decrypt(request.ciphertext_blob, dict(request.encryption_context), request.key,
                                             evidence)
        return pb.DecryptResponse(
            key=result.key.name, key_version=result.version, plaintext=result.plaintext,
            ciphertext_for_recipient=result.for_recipient,
            ciphertext_format=_format(result),
            recipient=_attested(result),
            caching=caching_to_proto(result.key.caching) if not result.recipient else None)

    async def ReEncrypt(self, request: pb.ReEncryptRequest, context: CallContext) -> pb.ReEncryptResponse:
        source, source_version, target, version, blob = await self._service.re_encrypt(
            request.ciphertext_blob, dict(request.source_encryption_context), request.source_key,
            request.destination_key, dict(request.destination_encryption_context))
        return pb.ReEncryptResponse(ciphertext_blob=blob, source_key=source.name, source_key_version=source_version,
                                    key=target.name, key_version=version)

    async def EncryptMessage(self, request: pb.EncryptMessageRequest,
                             context: CallContext) -> pb.EncryptMessageResponse:
        suite = SUITE_NAMES.get(request.algorithm_suite)
        if suite is None:
            raise InvalidArgument.single("algorithm_suite", "not a MessageAlgorithmSuite")
        result = await self._service.encrypt_message(request.key, request.plaintext, dict(request.encryption_context),
                                                     suite, request.frame_length)
        return pb.EncryptMessageResponse(ciphertext=result.payload, key=result.key.name, key_version=result.version,
                                         algorithm_suite=SUITE_ENUM[suite])

    async def DecryptMessage(self, request: pb.DecryptMessageRequest,
                             context: CallContext) -> pb.DecryptMessageResponse:
        result = await self._service.decrypt_message(request.ciphertext, dict(request.encryption_context), request.key)
        return pb.DecryptMessageResponse(plaintext=result.payload, encryption_context=result.encryption_context,
                                         key=result.key.name, key_version=result.version,
                                         algorithm_suite=SUITE_ENUM[result.algorithm])
