import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from privmesh.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ALIAS_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_DISABLED: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_PENDING_DELETION: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_PENDING_IMPORT: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_DESTROYED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_CIPHERTEXT: _ClassVar[ErrorReason]
    ERROR_REASON_ENCRYPTION_CONTEXT_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_PAYLOAD_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_POLICY_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_REQUIRED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_REJECTED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_TOKEN_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_RECIPIENT_KEY_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_VERIFIER_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_BACKEND_UNSUPPORTED: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_POLICY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_POLICY_LOCKOUT: _ClassVar[ErrorReason]
    ERROR_REASON_ETAG_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_ORIGIN_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_IMPORT_TOKEN_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_MATERIAL_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]

class KeyBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_BACKEND_UNSPECIFIED: _ClassVar[KeyBackend]
    KEY_BACKEND_LOCAL: _ClassVar[KeyBackend]
    KEY_BACKEND_AWS_KMS: _ClassVar[KeyBackend]

class KeyOrigin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ORIGIN_UNSPECIFIED: _ClassVar[KeyOrigin]
    KEY_ORIGIN_BACKEND: _ClassVar[KeyOrigin]
    KEY_ORIGIN_EXTERNAL: _ClassVar[KeyOrigin]

class KeySpec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_SPEC_UNSPECIFIED: _ClassVar[KeySpec]
    KEY_SPEC_AES_256: _ClassVar[KeySpec]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_ENABLED: _ClassVar[KeyState]
    KEY_STATE_DISABLED: _ClassVar[KeyState]
    KEY_STATE_PENDING_DELETION: _ClassVar[KeyState]
    KEY_STATE_PENDING_IMPORT: _ClassVar[KeyState]
    KEY_STATE_DESTROYED: _ClassVar[KeyState]

class KeyVersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_VERSION_STATE_UNSPECIFIED: _ClassVar[KeyVersionState]
    KEY_VERSION_STATE_AVAILABLE: _ClassVar[KeyVersionState]
    KEY_VERSION_STATE_PENDING_IMPORT: _ClassVar[KeyVersionState]
    KEY_VERSION_STATE_DESTROYED: _ClassVar[KeyVersionState]

class KeyOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_OPERATION_UNSPECIFIED: _ClassVar[KeyOperation]
    KEY_OPERATION_DESCRIBE: _ClassVar[KeyOperation]
    KEY_OPERATION_UPDATE: _ClassVar[KeyOperation]
    KEY_OPERATION_ROTATE: _ClassVar[KeyOperation]
    KEY_OPERATION_ENABLE: _ClassVar[KeyOperation]
    KEY_OPERATION_DISABLE: _ClassVar[KeyOperation]
    KEY_OPERATION_SCHEDULE_DELETION: _ClassVar[KeyOperation]
    KEY_OPERATION_CANCEL_DELETION: _ClassVar[KeyOperation]
    KEY_OPERATION_IMPORT_KEY_MATERIAL: _ClassVar[KeyOperation]
    KEY_OPERATION_GET_KEY_POLICY: _ClassVar[KeyOperation]
    KEY_OPERATION_PUT_KEY_POLICY: _ClassVar[KeyOperation]
    KEY_OPERATION_GENERATE_DATA_KEY: _ClassVar[KeyOperation]
    KEY_OPERATION_GENERATE_DATA_KEY_WITHOUT_PLAINTEXT: _ClassVar[KeyOperation]
    KEY_OPERATION_DECRYPT: _ClassVar[KeyOperation]
    KEY_OPERATION_ENCRYPT: _ClassVar[KeyOperation]
    KEY_OPERATION_RE_ENCRYPT_FROM: _ClassVar[KeyOperation]
    KEY_OPERATION_RE_ENCRYPT_TO: _ClassVar[KeyOperation]

class PolicyEffect(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_EFFECT_UNSPECIFIED: _ClassVar[PolicyEffect]
    POLICY_EFFECT_ALLOW: _ClassVar[PolicyEffect]
    POLICY_EFFECT_DENY: _ClassVar[PolicyEffect]

class DataKeySpec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_KEY_SPEC_UNSPECIFIED: _ClassVar[DataKeySpec]
    DATA_KEY_SPEC_AES_256: _ClassVar[DataKeySpec]

class KeyEncryptionAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ENCRYPTION_ALGORITHM_UNSPECIFIED: _ClassVar[KeyEncryptionAlgorithm]
    KEY_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256: _ClassVar[KeyEncryptionAlgorithm]

class RecipientCiphertextFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECIPIENT_CIPHERTEXT_FORMAT_UNSPECIFIED: _ClassVar[RecipientCiphertextFormat]
    RECIPIENT_CIPHERTEXT_FORMAT_CMS_ENVELOPED_DATA: _ClassVar[RecipientCiphertextFormat]
    RECIPIENT_CIPHERTEXT_FORMAT_RSAES_OAEP: _ClassVar[RecipientCiphertextFormat]

class WrappingAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRAPPING_ALGORITHM_UNSPECIFIED: _ClassVar[WrappingAlgorithm]
    WRAPPING_ALGORITHM_RSAES_OAEP_SHA_256: _ClassVar[WrappingAlgorithm]

class MessageAlgorithmSuite(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_ALGORITHM_SUITE_UNSPECIFIED: _ClassVar[MessageAlgorithmSuite]
    MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY: _ClassVar[MessageAlgorithmSuite]
    MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: _ClassVar[MessageAlgorithmSuite]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_KEY_NOT_FOUND: ErrorReason
ERROR_REASON_ALIAS_ALREADY_EXISTS: ErrorReason
ERROR_REASON_KEY_DISABLED: ErrorReason
ERROR_REASON_KEY_PENDING_DELETION: ErrorReason
ERROR_REASON_KEY_PENDING_IMPORT: ErrorReason
ERROR_REASON_KEY_DESTROYED: ErrorReason
ERROR_REASON_INVALID_CIPHERTEXT: ErrorReason
ERROR_REASON_ENCRYPTION_CONTEXT_INVALID: ErrorReason
ERROR_REASON_PAYLOAD_TOO_LARGE: ErrorReason
ERROR_REASON_KEY_POLICY_DENIED: ErrorReason
ERROR_REASON_ATTESTATION_REQUIRED: ErrorReason
ERROR_REASON_ATTESTATION_REJECTED: ErrorReason
ERROR_REASON_ATTESTATION_TOKEN_INVALID: ErrorReason
ERROR_REASON_RECIPIENT_KEY_MISMATCH: ErrorReason
ERROR_REASON_ATTESTATION_VERIFIER_UNAVAILABLE: ErrorReason
ERROR_REASON_BACKEND_UNAVAILABLE: ErrorReason
ERROR_REASON_BACKEND_UNSUPPORTED: ErrorReason
ERROR_REASON_KEY_POLICY_INVALID: ErrorReason
ERROR_REASON_KEY_POLICY_LOCKOUT: ErrorReason
ERROR_REASON_ETAG_MISMATCH: ErrorReason
ERROR_REASON_ORIGIN_MISMATCH: ErrorReason
ERROR_REASON_IMPORT_TOKEN_INVALID: ErrorReason
ERROR_REASON_KEY_MATERIAL_MISMATCH: ErrorReason
ERROR_REASON_REQUEST_ID_CONFLICT: ErrorReason
KEY_BACKEND_UNSPECIFIED: KeyBackend
KEY_BACKEND_LOCAL: KeyBackend
KEY_BACKEND_AWS_KMS: KeyBackend
KEY_ORIGIN_UNSPECIFIED: KeyOrigin
KEY_ORIGIN_BACKEND: KeyOrigin
KEY_ORIGIN_EXTERNAL: KeyOrigin
KEY_SPEC_UNSPECIFIED: KeySpec
KEY_SPEC_AES_256: KeySpec
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_ENABLED: KeyState
KEY_STATE_DISABLED: KeyState
KEY_STATE_PENDING_DELETION: KeyState
KEY_STATE_PENDING_IMPORT: KeyState
KEY_STATE_DESTROYED: KeyState
KEY_VERSION_STATE_UNSPECIFIED: KeyVersionState
KEY_VERSION_STATE_AVAILABLE: KeyVersionState
KEY_VERSION_STATE_PENDING_IMPORT: KeyVersionState
KEY_VERSION_STATE_DESTROYED: KeyVersionState
KEY_OPERATION_UNSPECIFIED: KeyOperation
KEY_OPERATION_DESCRIBE: KeyOperation
KEY_OPERATION_UPDATE: KeyOperation
KEY_OPERATION_ROTATE: KeyOperation
KEY_OPERATION_ENABLE: KeyOperation
KEY_OPERATION_DISABLE: KeyOperation
KEY_OPERATION_SCHEDULE_DELETION: KeyOperation
KEY_OPERATION_CANCEL_DELETION: KeyOperation
KEY_OPERATION_IMPORT_KEY_MATERIAL: KeyOperation
KEY_OPERATION_GET_KEY_POLICY: KeyOperation
KEY_OPERATION_PUT_KEY_POLICY: KeyOperation
KEY_OPERATION_GENERATE_DATA_KEY: KeyOperation
KEY_OPERATION_GENERATE_DATA_KEY_WITHOUT_PLAINTEXT: KeyOperation
KEY_OPERATION_DECRYPT: KeyOperation
KEY_OPERATION_ENCRYPT: KeyOperation
KEY_OPERATION_RE_ENCRYPT_FROM: KeyOperation
KEY_OPERATION_RE_ENCRYPT_TO: KeyOperation
POLICY_EFFECT_UNSPECIFIED: PolicyEffect
POLICY_EFFECT_ALLOW: PolicyEffect
POLICY_EFFECT_DENY: PolicyEffect
DATA_KEY_SPEC_UNSPECIFIED: DataKeySpec
DATA_KEY_SPEC_AES_256: DataKeySpec
KEY_ENCRYPTION_ALGORITHM_UNSPECIFIED: KeyEncryptionAlgorithm
KEY_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256: KeyEncryptionAlgorithm
RECIPIENT_CIPHERTEXT_FORMAT_UNSPECIFIED: RecipientCiphertextFormat
RECIPIENT_CIPHERTEXT_FORMAT_CMS_ENVELOPED_DATA: RecipientCiphertextFormat
RECIPIENT_CIPHERTEXT_FORMAT_RSAES_OAEP: RecipientCiphertextFormat
WRAPPING_ALGORITHM_UNSPECIFIED: WrappingAlgorithm
WRAPPING_ALGORITHM_RSAES_OAEP_SHA_256: WrappingAlgorithm
MESSAGE_ALGORITHM_SUITE_UNSPECIFIED: MessageAlgorithmSuite
MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY: MessageAlgorithmSuite
MESSAGE_ALGORITHM_SUITE_AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: MessageAlgorithmSuite

class DataKeyCaching(_message.Message):
    __slots__ = ("max_age", "max_messages", "max_bytes")
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_age: _duration_pb2.Duration
    max_messages: int
    max_bytes: int
    def __init__(self, max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_messages: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class Key(_message.Message):
    __slots__ = ("name", "key_id", "alias", "description", "backend", "origin", "key_spec", "state", "primary_version", "rotation_period", "next_rotation_time", "data_key_caching", "deletion_time", "material_expire_time", "aws_kms_key_arn", "create_time", "update_time", "destroy_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    KEY_SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_PERIOD_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROTATION_TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_CACHING_FIELD_NUMBER: _ClassVar[int]
    DELETION_TIME_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    AWS_KMS_KEY_ARN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DESTROY_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    key_id: str
    alias: str
    description: str
    backend: KeyBackend
    origin: KeyOrigin
    key_spec: KeySpec
    state: KeyState
    primary_version: int
    rotation_period: _duration_pb2.Duration
    next_rotation_time: _timestamp_pb2.Timestamp
    data_key_caching: DataKeyCaching
    deletion_time: _timestamp_pb2.Timestamp
    material_expire_time: _timestamp_pb2.Timestamp
    aws_kms_key_arn: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    destroy_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., key_id: _Optional[str] = ..., alias: _Optional[str] = ..., description: _Optional[str] = ..., backend: _Optional[_Union[KeyBackend, str]] = ..., origin: _Optional[_Union[KeyOrigin, str]] = ..., key_spec: _Optional[_Union[KeySpec, str]] = ..., state: _Optional[_Union[KeyState, str]] = ..., primary_version: _Optional[int] = ..., rotation_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., next_rotation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_key_caching: _Optional[_Union[DataKeyCaching, _Mapping]] = ..., deletion_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., material_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., aws_kms_key_arn: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., destroy_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("name", "version", "state", "primary", "create_time", "material_expire_time", "destroy_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    MATERIAL_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    DESTROY_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    state: KeyVersionState
    primary: bool
    create_time: _timestamp_pb2.Timestamp
    material_expire_time: _timestamp_pb2.Timestamp
    destroy_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[KeyVersionState, str]] = ..., primary: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., material_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., destroy_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PcrSet(_message.Message):
    __slots__ = ("pcrs", "description")
    class PcrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    PCRS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    pcrs: _containers.ScalarMap[int, bytes]
    description: str
    def __init__(self, pcrs: _Optional[_Mapping[int, bytes]] = ..., description: _Optional[str] = ...) -> None: ...

class AttestationCondition(_message.Message):
    __slots__ = ("verifier_policy", "allowed_pcr_sets", "allow_debug")
    VERIFIER_POLICY_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PCR_SETS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEBUG_FIELD_NUMBER: _ClassVar[int]
    verifier_policy: str
    allowed_pcr_sets: _containers.RepeatedCompositeFieldContainer[PcrSet]
    allow_debug: bool
    def __init__(self, verifier_policy: _Optional[str] = ..., allowed_pcr_sets: _Optional[_Iterable[_Union[PcrSet, _Mapping]]] = ..., allow_debug: _Optional[bool] = ...) -> None: ...

class PolicyConditions(_message.Message):
    __slots__ = ("encryption_context_equals", "encryption_context_keys_required", "encryption_context_keys_allowed", "attestation")
    class EncryptionContextEqualsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENCRYPTION_CONTEXT_EQUALS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_KEYS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_KEYS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    encryption_context_equals: _containers.ScalarMap[str, str]
    encryption_context_keys_required: _containers.RepeatedScalarFieldContainer[str]
    encryption_context_keys_allowed: _containers.RepeatedScalarFieldContainer[str]
    attestation: AttestationCondition
    def __init__(self, encryption_context_equals: _Optional[_Mapping[str, str]] = ..., encryption_context_keys_required: _Optional[_Iterable[str]] = ..., encryption_context_keys_allowed: _Optional[_Iterable[str]] = ..., attestation: _Optional[_Union[AttestationCondition, _Mapping]] = ...) -> None: ...

class PolicyStatement(_message.Message):
    __slots__ = ("sid", "effect", "principals", "operations", "conditions")
    SID_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    sid: str
    effect: PolicyEffect
    principals: _containers.RepeatedScalarFieldContainer[str]
    operations: _containers.RepeatedScalarFieldContainer[KeyOperation]
    conditions: PolicyConditions
    def __init__(self, sid: _Optional[str] = ..., effect: _Optional[_Union[PolicyEffect, str]] = ..., principals: _Optional[_Iterable[str]] = ..., operations: _Optional[_Iterable[_Union[KeyOperation, str]]] = ..., conditions: _Optional[_Union[PolicyConditions, _Mapping]] = ...) -> None: ...

class KeyPolicy(_message.Message):
    __slots__ = ("key", "statements", "etag", "update_time")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    key: str
    statements: _containers.RepeatedCompositeFieldContainer[PolicyStatement]
    etag: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[str] = ..., statements: _Optional[_Iterable[_Union[PolicyStatement, _Mapping]]] = ..., etag: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Recipient(_message.Message):
    __slots__ = ("attestation_document", "attestation_result_token", "public_key", "key_encryption_algorithm")
    ATTESTATION_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_RESULT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ENCRYPTION_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    attestation_document: bytes
    attestation_result_token: str
    public_key: bytes
    key_encryption_algorithm: KeyEncryptionAlgorithm
    def __init__(self, attestation_document: _Optional[bytes] = ..., attestation_result_token: _Optional[str] = ..., public_key: _Optional[bytes] = ..., key_encryption_algorithm: _Optional[_Union[KeyEncryptionAlgorithm, str]] = ...) -> None: ...

class AttestedRecipient(_message.Message):
    __slots__ = ("module_id", "document_sha256", "verifier_policy", "public_key_sha256")
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_POLICY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SHA256_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    document_sha256: str
    verifier_policy: str
    public_key_sha256: str
    def __init__(self, module_id: _Optional[str] = ..., document_sha256: _Optional[str] = ..., verifier_policy: _Optional[str] = ..., public_key_sha256: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("alias", "description", "backend", "origin", "key_spec", "policy", "rotation_period", "data_key_caching", "request_id")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    KEY_SPEC_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ROTATION_PERIOD_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_CACHING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    alias: str
    description: str
    backend: KeyBackend
    origin: KeyOrigin
    key_spec: KeySpec
    policy: KeyPolicy
    rotation_period: _duration_pb2.Duration
    data_key_caching: DataKeyCaching
    request_id: str
    def __init__(self, alias: _Optional[str] = ..., description: _Optional[str] = ..., backend: _Optional[_Union[KeyBackend, str]] = ..., origin: _Optional[_Union[KeyOrigin, str]] = ..., key_spec: _Optional[_Union[KeySpec, str]] = ..., policy: _Optional[_Union[KeyPolicy, _Mapping]] = ..., rotation_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., data_key_caching: _Optional[_Union[DataKeyCaching, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class GetKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "backend", "show_destroyed")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SHOW_DESTROYED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    backend: KeyBackend
    show_destroyed: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., backend: _Optional[_Union[KeyBackend, str]] = ..., show_destroyed: _Optional[bool] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateKeyRequest(_message.Message):
    __slots__ = ("key", "update_mask", "etag")
    KEY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    key: Key
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: Key
    version: KeyVersion
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., version: _Optional[_Union[KeyVersion, _Mapping]] = ...) -> None: ...

class ListKeyVersionsRequest(_message.Message):
    __slots__ = ("key", "page_size", "page_token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: str
    page_size: int
    page_token: str
    def __init__(self, key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListKeyVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EnableKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EnableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class DisableKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DisableKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class ScheduleKeyDeletionRequest(_message.Message):
    __slots__ = ("name", "waiting_period")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAITING_PERIOD_FIELD_NUMBER: _ClassVar[int]
    name: str
    waiting_period: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., waiting_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ScheduleKeyDeletionResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class CancelKeyDeletionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelKeyDeletionResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class GetImportParametersRequest(_message.Message):
    __slots__ = ("key", "wrapping_algorithm")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WRAPPING_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    key: str
    wrapping_algorithm: WrappingAlgorithm
    def __init__(self, key: _Optional[str] = ..., wrapping_algorithm: _Optional[_Union[WrappingAlgorithm, str]] = ...) -> None: ...

class GetImportParametersResponse(_message.Message):
    __slots__ = ("key", "public_key", "import_token", "expire_time")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    key: str
    public_key: bytes
    import_token: bytes
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[str] = ..., public_key: _Optional[bytes] = ..., import_token: _Optional[bytes] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ImportKeyMaterialRequest(_message.Message):
    __slots__ = ("key", "import_token", "encrypted_key_material", "expire_time", "new_version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    IMPORT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_MATERIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    import_token: bytes
    encrypted_key_material: bytes
    expire_time: _timestamp_pb2.Timestamp
    new_version: bool
    def __init__(self, key: _Optional[str] = ..., import_token: _Optional[bytes] = ..., encrypted_key_material: _Optional[bytes] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., new_version: _Optional[bool] = ...) -> None: ...

class ImportKeyMaterialResponse(_message.Message):
    __slots__ = ("key", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: Key
    version: KeyVersion
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ..., version: _Optional[_Union[KeyVersion, _Mapping]] = ...) -> None: ...

class DeleteImportedKeyMaterialRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DeleteImportedKeyMaterialResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: Key
    def __init__(self, key: _Optional[_Union[Key, _Mapping]] = ...) -> None: ...

class PutKeyPolicyRequest(_message.Message):
    __slots__ = ("key", "policy", "etag", "bypass_policy_lockout_safety_check")
    KEY_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    BYPASS_POLICY_LOCKOUT_SAFETY_CHECK_FIELD_NUMBER: _ClassVar[int]
    key: str
    policy: KeyPolicy
    etag: str
    bypass_policy_lockout_safety_check: bool
    def __init__(self, key: _Optional[str] = ..., policy: _Optional[_Union[KeyPolicy, _Mapping]] = ..., etag: _Optional[str] = ..., bypass_policy_lockout_safety_check: _Optional[bool] = ...) -> None: ...

class PutKeyPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: KeyPolicy
    def __init__(self, policy: _Optional[_Union[KeyPolicy, _Mapping]] = ...) -> None: ...

class GetKeyPolicyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetKeyPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: KeyPolicy
    def __init__(self, policy: _Optional[_Union[KeyPolicy, _Mapping]] = ...) -> None: ...

class GenerateDataKeyRequest(_message.Message):
    __slots__ = ("key", "encryption_context", "key_spec", "recipient")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_SPEC_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    key: str
    encryption_context: _containers.ScalarMap[str, str]
    key_spec: DataKeySpec
    recipient: Recipient
    def __init__(self, key: _Optional[str] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., key_spec: _Optional[_Union[DataKeySpec, str]] = ..., recipient: _Optional[_Union[Recipient, _Mapping]] = ...) -> None: ...

class GenerateDataKeyResponse(_message.Message):
    __slots__ = ("key", "key_version", "plaintext", "ciphertext_blob", "ciphertext_for_recipient", "ciphertext_format", "recipient", "caching")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_BLOB_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FOR_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CACHING_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_version: int
    plaintext: bytes
    ciphertext_blob: bytes
    ciphertext_for_recipient: bytes
    ciphertext_format: RecipientCiphertextFormat
    recipient: AttestedRecipient
    caching: DataKeyCaching
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., plaintext: _Optional[bytes] = ..., ciphertext_blob: _Optional[bytes] = ..., ciphertext_for_recipient: _Optional[bytes] = ..., ciphertext_format: _Optional[_Union[RecipientCiphertextFormat, str]] = ..., recipient: _Optional[_Union[AttestedRecipient, _Mapping]] = ..., caching: _Optional[_Union[DataKeyCaching, _Mapping]] = ...) -> None: ...

class GenerateDataKeyWithoutPlaintextRequest(_message.Message):
    __slots__ = ("key", "encryption_context", "key_spec")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_SPEC_FIELD_NUMBER: _ClassVar[int]
    key: str
    encryption_context: _containers.ScalarMap[str, str]
    key_spec: DataKeySpec
    def __init__(self, key: _Optional[str] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., key_spec: _Optional[_Union[DataKeySpec, str]] = ...) -> None: ...

class GenerateDataKeyWithoutPlaintextResponse(_message.Message):
    __slots__ = ("key", "key_version", "ciphertext_blob")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_BLOB_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_version: int
    ciphertext_blob: bytes
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., ciphertext_blob: _Optional[bytes] = ...) -> None: ...

class DecryptRequest(_message.Message):
    __slots__ = ("ciphertext_blob", "encryption_context", "key", "recipient")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CIPHERTEXT_BLOB_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    ciphertext_blob: bytes
    encryption_context: _containers.ScalarMap[str, str]
    key: str
    recipient: Recipient
    def __init__(self, ciphertext_blob: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., key: _Optional[str] = ..., recipient: _Optional[_Union[Recipient, _Mapping]] = ...) -> None: ...

class DecryptResponse(_message.Message):
    __slots__ = ("key", "key_version", "plaintext", "ciphertext_for_recipient", "ciphertext_format", "recipient", "caching")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FOR_RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CACHING_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_version: int
    plaintext: bytes
    ciphertext_for_recipient: bytes
    ciphertext_format: RecipientCiphertextFormat
    recipient: AttestedRecipient
    caching: DataKeyCaching
    def __init__(self, key: _Optional[str] = ..., key_version: _Optional[int] = ..., plaintext: _Optional[bytes] = ..., ciphertext_for_recipient: _Optional[bytes] = ..., ciphertext_format: _Optional[_Union[RecipientCiphertextFormat, str]] = ..., recipient: _Optional[_Union[AttestedRecipient, _Mapping]] = ..., caching: _Optional[_Union[DataKeyCaching, _Mapping]] = ...) -> None: ...

class ReEncryptRequest(_message.Message):
    __slots__ = ("ciphertext_blob", "source_encryption_context", "source_key", "destination_key", "destination_encryption_context")
    class SourceEncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class DestinationEncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CIPHERTEXT_BLOB_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KEY_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ciphertext_blob: bytes
    source_encryption_context: _containers.ScalarMap[str, str]
    source_key: str
    destination_key: str
    destination_encryption_context: _containers.ScalarMap[str, str]
    def __init__(self, ciphertext_blob: _Optional[bytes] = ..., source_encryption_context: _Optional[_Mapping[str, str]] = ..., source_key: _Optional[str] = ..., destination_key: _Optional[str] = ..., destination_encryption_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReEncryptResponse(_message.Message):
    __slots__ = ("ciphertext_blob", "source_key", "source_key_version", "key", "key_version")
    CIPHERTEXT_BLOB_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ciphertext_blob: bytes
    source_key: str
    source_key_version: int
    key: str
    key_version: int
    def __init__(self, ciphertext_blob: _Optional[bytes] = ..., source_key: _Optional[str] = ..., source_key_version: _Optional[int] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ...) -> None: ...

class EncryptMessageRequest(_message.Message):
    __slots__ = ("key", "plaintext", "encryption_context", "algorithm_suite", "frame_length")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_SUITE_FIELD_NUMBER: _ClassVar[int]
    FRAME_LENGTH_FIELD_NUMBER: _ClassVar[int]
    key: str
    plaintext: bytes
    encryption_context: _containers.ScalarMap[str, str]
    algorithm_suite: MessageAlgorithmSuite
    frame_length: int
    def __init__(self, key: _Optional[str] = ..., plaintext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., algorithm_suite: _Optional[_Union[MessageAlgorithmSuite, str]] = ..., frame_length: _Optional[int] = ...) -> None: ...

class EncryptMessageResponse(_message.Message):
    __slots__ = ("ciphertext", "key", "key_version", "algorithm_suite")
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_SUITE_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    key: str
    key_version: int
    algorithm_suite: MessageAlgorithmSuite
    def __init__(self, ciphertext: _Optional[bytes] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ..., algorithm_suite: _Optional[_Union[MessageAlgorithmSuite, str]] = ...) -> None: ...

class DecryptMessageRequest(_message.Message):
    __slots__ = ("ciphertext", "encryption_context", "key")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    encryption_context: _containers.ScalarMap[str, str]
    key: str
    def __init__(self, ciphertext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., key: _Optional[str] = ...) -> None: ...

class DecryptMessageResponse(_message.Message):
    __slots__ = ("plaintext", "encryption_context", "key", "key_version", "algorithm_suite")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLAINTEXT_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_SUITE_FIELD_NUMBER: _ClassVar[int]
    plaintext: bytes
    encryption_context: _containers.ScalarMap[str, str]
    key: str
    key_version: int
    algorithm_suite: MessageAlgorithmSuite
    def __init__(self, plaintext: _Optional[bytes] = ..., encryption_context: _Optional[_Mapping[str, str]] = ..., key: _Optional[str] = ..., key_version: _Optional[int] = ..., algorithm_suite: _Optional[_Union[MessageAlgorithmSuite, str]] = ...) -> None: ...
