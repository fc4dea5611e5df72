"""The aws-kms backend: every key is a KMS symmetric key and every operation its KMS call, through boto3.

KMS keeps rotations inside one key (RotateKeyOnDemand) and does not say which rotation wrapped a blob, so
versions unwrapped here are reported as 0. Attested release maps to KMS's Recipient parameter (KMS answers
with CiphertextForRecipient, a CMS EnvelopedData for the enclave's key). The request shapes are built by
the functions below so that they can be checked against botocore's own KMS service model.

KMS can also check the recipient's measurements itself: `recipient_statement` renders the key-policy
statement with KMS's attestation condition keys (enclave PCRs, or NitroTPM PCRs for attestable AMIs), a
second, independent gate beside the broker's own policy and the attestation-verifier's verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from privmesh.keybroker.backends.base import (
    BackendError,
    ImportParameters,
    ImportRejected,
    InvalidCiphertext,
    KeyRef,
    MaterialMismatch,
    MaterialUnavailable,
    Unsupported,
)

MIN_PENDING_DAYS = 7
MAX_PENDING_DAYS = 30
_CIPHERTEXT_ERRORS = {"InvalidCiphertextException", "IncorrectKeyException", "NotFoundException"}
_UNAVAILABLE_MATERIAL = {"KMSInvalidStateException", "DisabledException"}
_UNSUPPORTED = {"UnsupportedOperationException", "NotImplementedException", "NotImplemented", "InvalidAction",
                "UnknownOperationException"}


#: KMS's condition keys on the attestation document of a Recipient request, by document kind (AWS KMS developer
#: guide, "Condition keys for Nitro Enclaves" and "Condition keys for NitroTPM"): the PCR index is appended.
RECIPIENT_PCR_CONDITION_KEYS = {
    "NITRO_ENCLAVE": "kms:RecipientAttestation:PCR",
    "NITRO_TPM": "kms:RecipientAttestation:NitroTPMPCR",
}
#: The operations those condition keys apply to that the broker calls with a Recipient.
RECIPIENT_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")
_MAX_PCR_INDEX = {"NITRO_ENCLAVE": 31, "NITRO_TPM": 23}


def recipient_conditions(kind: str, pcrs: Mapping[int, bytes]) -> dict[str, dict[str, str]]:
    """The key-policy Condition under which KMS answers a Recipient request only when the document's PCRs
    equal `pcrs` (KMS wants lower-case hex; StringEqualsIgnoreCase as AWS's examples use). A request without
    a document fails such a condition, so the statement never allows plaintext answers."""
    if kind not in RECIPIENT_PCR_CONDITION_KEYS:
        raise ValueError(f"kind must be one of {', '.join(sorted(RECIPIENT_PCR_CONDITION_KEYS))}")
    if not pcrs:
        raise ValueError("at least one PCR is required: an empty condition would allow every recipient")
    for index, value in pcrs.items():
        if not 0 <= index <= _MAX_PCR_INDEX[kind] or len(value) != 48:
            raise ValueError(f"PCR{index} must be 48 bytes (SHA-384) with an index in 0..{_MAX_PCR_INDEX[kind]}")
    prefix = RECIPIENT_PCR_CONDITION_KEYS[kind]
    return {"StringEqualsIgnoreCase": {f"{prefix}{i}": pcrs[i].hex() for i in sorted(pcrs)}}


def recipient_statement(sid: str, principal_arn: str, kind: str, pcrs: Mapping[int, bytes],
                        actions: Sequence[str] = RECIPIENT_ACTIONS) -> dict[str, Any]:
    """A key-policy statement allowing `principal_arn` (the key broker's role) the Recipient operations
    only for documents of `kind` whose PCRs are `pcrs` (one allowed set; add one statement per set)."""
    return {"Sid": sid, "Effect": "Allow", "Principal": {"AWS": principal_arn}, "Action": list(actions),
            "Resource": "*", "Condition": recipient_conditions(kind, pcrs)}


def recipient(document: bytes) -> dict[str, Any]:
    """KMS's Recipient parameter for an attestation document (a Nitro Enclave's or a NitroTPM's)."""
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


def generate_data_key_request(key_id: str, context: dict[str, str], document: bytes | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": context}
    if document is not None:
        params["Recipient"] = recipient(document)
    return params


def decrypt_request(key_id: str, blob: bytes, context: dict[str, str], document: bytes | None = None) -> dict[str, Any]:
    """Always with KeyId: KMS then refuses a blob of another key instead of decrypting it."""
    params: dict[str, Any] = {"CiphertextBlob": blob, "EncryptionContext": context, "KeyId": key_id}
    if document is not None:
        params["Recipient"] = recipient(document)
    return params


def import_parameters_request(key_id: str) -> dict[str, Any]:
    return {"KeyId": key_id, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_4096"}


def import_material_request(key_id: str, token: bytes, wrapped: bytes, expire: datetime | None,
                            new_version: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"KeyId": key_id, "ImportToken": token, "EncryptedKeyMaterial": wrapped}
    if new_version:
        params["ImportType"] = "NEW_KEY_MATERIAL"
    if expire is None:
        params["ExpirationModel"] = "KEY_MATERIAL_DOES_NOT_EXPIRE"
    else:
        params.update(ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=expire)
    return params


class AwsKmsBackend:
    name = "aws-kms"
    releases_to_recipients = True
    blocking = True  # HTTP to KMS
    opaque_blobs = True  # KMS's CiphertextBlob format is not documented

    def __init__(self, region: str, endpoint_url: str | None, timeout: float) -> None:
        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 3, "mode": "standard"})
        self._kms = boto3.client("kms", region_name=region, endpoint_url=endpoint_url, config=config)

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            return dict(getattr(self._kms, operation)(**params))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _CIPHERTEXT_ERRORS:
                raise InvalidCiphertext from None
            if code in _UNAVAILABLE_MATERIAL:
                raise MaterialUnavailable from None
            if code in _UNSUPPORTED or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501:
                raise Unsupported(f"KMS does not support {operation} here") from None
            if code in ("ExpiredImportTokenException", "InvalidImportTokenException"):
                raise ImportRejected from None
            if code == "IncorrectKeyMaterialException":
                raise MaterialMismatch from None
            raise BackendError(code) from None
        except BotoCoreError as exc:
            raise BackendError(type(exc).__name__) from None

    def create_key(self, key_id: str, description: str, external: bool) -> KeyRef:
        reply = self._call("create_key", Description=description, KeySpec="SYMMETRIC_DEFAULT",
                           KeyUsage="ENCRYPT_DECRYPT", Origin="EXTERNAL" if external else "AWS_KMS",
                           Tags=[{"TagKey": "privmesh:key-broker", "TagValue": "true"}])
        metadata = reply["KeyMetadata"]
        return KeyRef(metadata["KeyId"], metadata["Arn"])

    def rotate(self, key: KeyRef, version: int) -> None:
        self._call("rotate_key_on_demand", KeyId=key.key_id)

    def wrap(self, key: KeyRef, version: int, plaintext: bytes, context: dict[str, str]) -> bytes:
        return bytes(self._call("encrypt", KeyId=key.key_id, Plaintext=plaintext, EncryptionContext=context)[
            "CiphertextBlob"])

    def generate_data_key(self, key: KeyRef, version: int, context: dict[str, str]) -> tuple[bytes, bytes]:
        reply = self._call("generate_data_key", **generate_data_key_request(key.key_id, context))
        return bytes(reply["Plaintext"]), bytes(reply["CiphertextBlob"])

    def generate_for_recipient(self, key: KeyRef, context: dict[str, str], document: bytes) -> tuple[bytes, bytes]:
        """(wrapped data key, CiphertextForRecipient); the plaintext never reaches the broker."""
        reply = self._call("generate_data_key", **generate_data_key_request(key.key_id, context, document))
        if not reply.get("CiphertextForRecipient"):
            raise Unsupported("this KMS endpoint ignored the Recipient parameter; nothing was released")
        return bytes(reply["CiphertextBlob"]), bytes(reply["CiphertextForRecipient"])

    def decrypt_for_recipient(self, key: KeyRef, blob: bytes, context: dict[str, str], document: bytes) -> bytes:
        reply = self._call("decrypt", **decrypt_request(key.key_id, blob, context, document))
        if not reply.get("CiphertextForRecipient"):
            raise Unsupported("this KMS endpoint ignored the Recipient parameter; nothing was released")
        return bytes(reply["CiphertextForRecipient"])

    def unwrap(self, key: KeyRef, blob: bytes, context: dict[str, str]) -> tuple[bytes, int]:
        return bytes(self._call("decrypt", **decrypt_request(key.key_id, blob, context))["Plaintext"]), 0

    def blob_key(self, blob: bytes) -> tuple[str, int] | None:
        """None: KMS does not document where its CiphertextBlob names the key, and asking KMS would decrypt
        before the broker's policy is checked; callers name the key, and every Decrypt carries it as KeyId."""
        return None

    def re_encrypt(self, source: KeyRef, blob: bytes, source_context: dict[str, str], destination: KeyRef,
                   version: int, destination_context: dict[str, str]) -> tuple[bytes, int]:
        reply = self._call("re_encrypt", CiphertextBlob=blob, SourceEncryptionContext=source_context,
                           SourceKeyId=source.key_id, DestinationKeyId=destination.key_id,
                           DestinationEncryptionContext=destination_context)
        return bytes(reply["CiphertextBlob"]), 0

    def set_enabled(self, key: KeyRef, enabled: bool) -> None:
        self._call("enable_key" if enabled else "disable_key", KeyId=key.key_id)

    def schedule_destruction(self, key: KeyRef, not_before: datetime) -> None:
        days = math.ceil((not_before - datetime.now(timezone.utc)).total_seconds() / 86400)
        self._call("schedule_key_deletion", KeyId=key.key_id,
                   PendingWindowInDays=min(MAX_PENDING_DAYS, max(MIN_PENDING_DAYS, days)))

    def cancel_destruction(self, key: KeyRef) -> None:
        self._call("cancel_key_deletion", KeyId=key.key_id)

    def destroy(self, key: KeyRef, versions: list[int]) -> None:
        """KMS destroys at the end of its own pending window (at least 7 days, never earlier than asked); the
        key is unusable from now on, since it is pending deletion."""
        state = self._call("describe_key", KeyId=key.key_id)["KeyMetadata"]["KeyState"]
        if state != "PendingDeletion":
            self._call("schedule_key_deletion", KeyId=key.key_id, PendingWindowInDays=MIN_PENDING_DAYS)

    def import_parameters(self, key: KeyRef) -> ImportParameters:
        reply = self._call("get_parameters_for_import", **import_parameters_request(key.key_id))
        return ImportParameters(bytes(reply["PublicKey"]), bytes(reply["ImportToken"]), reply["ParametersValidTo"])

    def import_material(self, key: KeyRef, version: int, token: bytes, wrapped: bytes,
                        expire: datetime | None) -> None:
        self._call("import_key_material", **import_material_request(key.key_id, token, wrapped, expire, version > 1))

    def delete_imported(self, key: KeyRef, version: int) -> None:
        self._call("delete_imported_key_material", KeyId=key.key_id)
