import datetime

from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
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
    ERROR_REASON_UNAUTHENTICATED_PEER: _ClassVar[ErrorReason]
    ERROR_REASON_PERMISSION_DENIED_BY_POLICY: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_FIELD: _ClassVar[ErrorReason]
    ERROR_REASON_AUDIT_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_RESOURCE_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_PAGE_TOKEN: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_AUTHORIZATION_NOT_APPLIED: _ClassVar[ErrorReason]
    ERROR_REASON_MALFORMED_REQUEST: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]

class AuditOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_OUTCOME_UNSPECIFIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_SUCCESS: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_DENIED: _ClassVar[AuditOutcome]
    AUDIT_OUTCOME_FAILURE: _ClassVar[AuditOutcome]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_UNAUTHENTICATED_PEER: ErrorReason
ERROR_REASON_PERMISSION_DENIED_BY_POLICY: ErrorReason
ERROR_REASON_INVALID_FIELD: ErrorReason
ERROR_REASON_AUDIT_UNAVAILABLE: ErrorReason
ERROR_REASON_RESOURCE_NOT_FOUND: ErrorReason
ERROR_REASON_INVALID_PAGE_TOKEN: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_AUTHORIZATION_NOT_APPLIED: ErrorReason
ERROR_REASON_MALFORMED_REQUEST: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
AUDIT_OUTCOME_UNSPECIFIED: AuditOutcome
AUDIT_OUTCOME_SUCCESS: AuditOutcome
AUDIT_OUTCOME_DENIED: AuditOutcome
AUDIT_OUTCOME_FAILURE: AuditOutcome
SENSITIVE_FIELD_NUMBER: _ClassVar[int]
sensitive: _descriptor.FieldDescriptor
AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
authorization: _descriptor.FieldDescriptor

class MethodAuthorization(_message.Message):
    __slots__ = ("request", "resolved", "items_field", "item", "service_wide")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SERVICE_WIDE_FIELD_NUMBER: _ClassVar[int]
    request: _containers.RepeatedCompositeFieldContainer[ResourceAccess]
    resolved: _containers.RepeatedCompositeFieldContainer[ResourceAccess]
    items_field: str
    item: _containers.RepeatedCompositeFieldContainer[ResourceAccess]
    service_wide: bool
    def __init__(self, request: _Optional[_Iterable[_Union[ResourceAccess, _Mapping]]] = ..., resolved: _Optional[_Iterable[_Union[ResourceAccess, _Mapping]]] = ..., items_field: _Optional[str] = ..., item: _Optional[_Iterable[_Union[ResourceAccess, _Mapping]]] = ..., service_wide: _Optional[bool] = ...) -> None: ...

class ResourceAccess(_message.Message):
    __slots__ = ("template", "when")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    template: str
    when: str
    def __init__(self, template: _Optional[str] = ..., when: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("sequence", "time", "service", "principal", "operation", "resource", "outcome", "details", "previous_hash", "entry_hash")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    ENTRY_HASH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    service: str
    principal: str
    operation: str
    resource: str
    outcome: AuditOutcome
    details: _containers.ScalarMap[str, str]
    previous_hash: bytes
    entry_hash: bytes
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., service: _Optional[str] = ..., principal: _Optional[str] = ..., operation: _Optional[str] = ..., resource: _Optional[str] = ..., outcome: _Optional[_Union[AuditOutcome, str]] = ..., details: _Optional[_Mapping[str, str]] = ..., previous_hash: _Optional[bytes] = ..., entry_hash: _Optional[bytes] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("service", "sequence", "head_hash", "time", "key_id", "signature")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    service: str
    sequence: int
    head_hash: bytes
    time: _timestamp_pb2.Timestamp
    key_id: str
    signature: bytes
    def __init__(self, service: _Optional[str] = ..., sequence: _Optional[int] = ..., head_hash: _Optional[bytes] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AddCheckpointRequest(_message.Message):
    __slots__ = ("old_size", "consistency_proof", "checkpoint", "log_public_key")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_PROOF_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOG_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    consistency_proof: _containers.RepeatedScalarFieldContainer[bytes]
    checkpoint: str
    log_public_key: bytes
    def __init__(self, old_size: _Optional[int] = ..., consistency_proof: _Optional[_Iterable[bytes]] = ..., checkpoint: _Optional[str] = ..., log_public_key: _Optional[bytes] = ...) -> None: ...

class AddCheckpointResponse(_message.Message):
    __slots__ = ("cosignature", "witness_public_key", "witness_key_endorsement")
    COSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WITNESS_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    WITNESS_KEY_ENDORSEMENT_FIELD_NUMBER: _ClassVar[int]
    cosignature: str
    witness_public_key: bytes
    witness_key_endorsement: KeyEndorsement
    def __init__(self, cosignature: _Optional[str] = ..., witness_public_key: _Optional[bytes] = ..., witness_key_endorsement: _Optional[_Union[KeyEndorsement, _Mapping]] = ...) -> None: ...

class KeyEndorsement(_message.Message):
    __slots__ = ("certificate_chain", "signature")
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: str
    signature: bytes
    def __init__(self, certificate_chain: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ListWitnessedCheckpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WitnessedLog(_message.Message):
    __slots__ = ("origin", "log_public_key", "latest_checkpoint", "refused_checkpoints")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    LOG_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    origin: str
    log_public_key: bytes
    latest_checkpoint: str
    refused_checkpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, origin: _Optional[str] = ..., log_public_key: _Optional[bytes] = ..., latest_checkpoint: _Optional[str] = ..., refused_checkpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class ListWitnessedCheckpointsResponse(_message.Message):
    __slots__ = ("logs", "witness_public_key", "witness_key_endorsement")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    WITNESS_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    WITNESS_KEY_ENDORSEMENT_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[WitnessedLog]
    witness_public_key: bytes
    witness_key_endorsement: KeyEndorsement
    def __init__(self, logs: _Optional[_Iterable[_Union[WitnessedLog, _Mapping]]] = ..., witness_public_key: _Optional[bytes] = ..., witness_key_endorsement: _Optional[_Union[KeyEndorsement, _Mapping]] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAuditCheckpointsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[AuditCheckpoint]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[AuditCheckpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAuditHeadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAuditHeadResponse(_message.Message):
    __slots__ = ("head", "public_key", "certificate_chain", "key_endorsement")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    KEY_ENDORSEMENT_FIELD_NUMBER: _ClassVar[int]
    head: AuditCheckpoint
    public_key: bytes
    certificate_chain: str
    key_endorsement: bytes
    def __init__(self, head: _Optional[_Union[AuditCheckpoint, _Mapping]] = ..., public_key: _Optional[bytes] = ..., certificate_chain: _Optional[str] = ..., key_endorsement: _Optional[bytes] = ...) -> None: ...

class GetAuditReceiptRequest(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class GetAuditReceiptResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: AuditReceipt
    def __init__(self, receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("entry", "leaf_index", "checkpoint", "inclusion_proof", "public_keys", "endorsements")
    class PublicKeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class EndorsementsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: KeyEndorsement
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[KeyEndorsement, _Mapping]] = ...) -> None: ...
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    ENDORSEMENTS_FIELD_NUMBER: _ClassVar[int]
    entry: AuditEntry
    leaf_index: int
    checkpoint: str
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    public_keys: _containers.ScalarMap[str, bytes]
    endorsements: _containers.MessageMap[str, KeyEndorsement]
    def __init__(self, entry: _Optional[_Union[AuditEntry, _Mapping]] = ..., leaf_index: _Optional[int] = ..., checkpoint: _Optional[str] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., public_keys: _Optional[_Mapping[str, bytes]] = ..., endorsements: _Optional[_Mapping[str, KeyEndorsement]] = ...) -> None: ...

class ListTreeCheckpointsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTreeCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints", "next_page_token")
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, checkpoints: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first_size", "second_size")
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    first_size: int
    second_size: int
    def __init__(self, first_size: _Optional[int] = ..., second_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, proof: _Optional[_Iterable[bytes]] = ...) -> None: ...
