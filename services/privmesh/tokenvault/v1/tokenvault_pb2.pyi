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
    ERROR_REASON_FIELD_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_TOKEN_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_VALUE_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_VALUE_EMPTY: _ClassVar[ErrorReason]
    ERROR_REASON_VALUE_ALPHABET_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_DOMAIN_TOO_SMALL: _ClassVar[ErrorReason]
    ERROR_REASON_VALUE_SHAPE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_BATCH_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_NOT_REVERSIBLE: _ClassVar[ErrorReason]
    ERROR_REASON_DETOKENIZE_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_PROFILE_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_IMMUTABLE: _ClassVar[ErrorReason]
    ERROR_REASON_ETAG_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_FIELD_HAS_TOKENS: _ClassVar[ErrorReason]
    ERROR_REASON_TTL_TOO_LONG: _ClassVar[ErrorReason]
    ERROR_REASON_SUBJECT_ID_REQUIRED: _ClassVar[ErrorReason]
    ERROR_REASON_ROTATION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_ROTATION_ALREADY_RUNNING: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_BROKER_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_BROKER_REFUSED: _ClassVar[ErrorReason]
    ERROR_REASON_TTL_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_TOKEN_SPACE_EXHAUSTED: _ClassVar[ErrorReason]
    ERROR_REASON_VALUE_UNMASKABLE: _ClassVar[ErrorReason]

class Alphabet(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALPHABET_UNSPECIFIED: _ClassVar[Alphabet]
    ALPHABET_RADIX_10: _ClassVar[Alphabet]
    ALPHABET_RADIX_36: _ClassVar[Alphabet]
    ALPHABET_RADIX_62: _ClassVar[Alphabet]

class ShapeMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHAPE_METHOD_UNSPECIFIED: _ClassVar[ShapeMethod]
    SHAPE_METHOD_RANDOM: _ClassVar[ShapeMethod]
    SHAPE_METHOD_DETERMINISTIC: _ClassVar[ShapeMethod]
    SHAPE_METHOD_FF1: _ClassVar[ShapeMethod]

class DetokenizeView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DETOKENIZE_VIEW_UNSPECIFIED: _ClassVar[DetokenizeView]
    DETOKENIZE_VIEW_VALUE: _ClassVar[DetokenizeView]
    DETOKENIZE_VIEW_MASKED: _ClassVar[DetokenizeView]

class RotationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROTATION_STATE_UNSPECIFIED: _ClassVar[RotationState]
    ROTATION_STATE_PENDING: _ClassVar[RotationState]
    ROTATION_STATE_RUNNING: _ClassVar[RotationState]
    ROTATION_STATE_SUCCEEDED: _ClassVar[RotationState]
    ROTATION_STATE_FAILED: _ClassVar[RotationState]
    ROTATION_STATE_CANCELLED: _ClassVar[RotationState]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_FIELD_NOT_FOUND: ErrorReason
ERROR_REASON_FIELD_ALREADY_EXISTS: ErrorReason
ERROR_REASON_TOKEN_NOT_FOUND: ErrorReason
ERROR_REASON_VALUE_TOO_LONG: ErrorReason
ERROR_REASON_VALUE_EMPTY: ErrorReason
ERROR_REASON_VALUE_ALPHABET_MISMATCH: ErrorReason
ERROR_REASON_DOMAIN_TOO_SMALL: ErrorReason
ERROR_REASON_VALUE_SHAPE_MISMATCH: ErrorReason
ERROR_REASON_BATCH_TOO_LARGE: ErrorReason
ERROR_REASON_FIELD_NOT_REVERSIBLE: ErrorReason
ERROR_REASON_DETOKENIZE_DENIED: ErrorReason
ERROR_REASON_PROFILE_INVALID: ErrorReason
ERROR_REASON_FIELD_IMMUTABLE: ErrorReason
ERROR_REASON_ETAG_MISMATCH: ErrorReason
ERROR_REASON_FIELD_HAS_TOKENS: ErrorReason
ERROR_REASON_TTL_TOO_LONG: ErrorReason
ERROR_REASON_SUBJECT_ID_REQUIRED: ErrorReason
ERROR_REASON_ROTATION_NOT_FOUND: ErrorReason
ERROR_REASON_ROTATION_ALREADY_RUNNING: ErrorReason
ERROR_REASON_REQUEST_ID_CONFLICT: ErrorReason
ERROR_REASON_KEY_BROKER_UNAVAILABLE: ErrorReason
ERROR_REASON_KEY_BROKER_REFUSED: ErrorReason
ERROR_REASON_TTL_INVALID: ErrorReason
ERROR_REASON_TOKEN_SPACE_EXHAUSTED: ErrorReason
ERROR_REASON_VALUE_UNMASKABLE: ErrorReason
ALPHABET_UNSPECIFIED: Alphabet
ALPHABET_RADIX_10: Alphabet
ALPHABET_RADIX_36: Alphabet
ALPHABET_RADIX_62: Alphabet
SHAPE_METHOD_UNSPECIFIED: ShapeMethod
SHAPE_METHOD_RANDOM: ShapeMethod
SHAPE_METHOD_DETERMINISTIC: ShapeMethod
SHAPE_METHOD_FF1: ShapeMethod
DETOKENIZE_VIEW_UNSPECIFIED: DetokenizeView
DETOKENIZE_VIEW_VALUE: DetokenizeView
DETOKENIZE_VIEW_MASKED: DetokenizeView
ROTATION_STATE_UNSPECIFIED: RotationState
ROTATION_STATE_PENDING: RotationState
ROTATION_STATE_RUNNING: RotationState
ROTATION_STATE_SUCCEEDED: RotationState
ROTATION_STATE_FAILED: RotationState
ROTATION_STATE_CANCELLED: RotationState

class RandomProfile(_message.Message):
    __slots__ = ("length", "prefix")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    length: int
    prefix: str
    def __init__(self, length: _Optional[int] = ..., prefix: _Optional[str] = ...) -> None: ...

class DeterministicProfile(_message.Message):
    __slots__ = ("length", "prefix")
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    length: int
    prefix: str
    def __init__(self, length: _Optional[int] = ..., prefix: _Optional[str] = ...) -> None: ...

class FormatPreservingProfile(_message.Message):
    __slots__ = ("alphabet", "tweak", "preserve_other_characters")
    ALPHABET_FIELD_NUMBER: _ClassVar[int]
    TWEAK_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_OTHER_CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    alphabet: Alphabet
    tweak: bytes
    preserve_other_characters: bool
    def __init__(self, alphabet: _Optional[_Union[Alphabet, str]] = ..., tweak: _Optional[bytes] = ..., preserve_other_characters: _Optional[bool] = ...) -> None: ...

class CardNumberProfile(_message.Message):
    __slots__ = ("keep_first_six", "keep_last_four", "method")
    KEEP_FIRST_SIX_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FOUR_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    keep_first_six: bool
    keep_last_four: bool
    method: ShapeMethod
    def __init__(self, keep_first_six: _Optional[bool] = ..., keep_last_four: _Optional[bool] = ..., method: _Optional[_Union[ShapeMethod, str]] = ...) -> None: ...

class SsnProfile(_message.Message):
    __slots__ = ("keep_last_four", "method")
    KEEP_LAST_FOUR_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    keep_last_four: bool
    method: ShapeMethod
    def __init__(self, keep_last_four: _Optional[bool] = ..., method: _Optional[_Union[ShapeMethod, str]] = ...) -> None: ...

class PhoneNumberProfile(_message.Message):
    __slots__ = ("keep_country_code", "keep_last_digits", "method")
    KEEP_COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_DIGITS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    keep_country_code: bool
    keep_last_digits: int
    method: ShapeMethod
    def __init__(self, keep_country_code: _Optional[bool] = ..., keep_last_digits: _Optional[int] = ..., method: _Optional[_Union[ShapeMethod, str]] = ...) -> None: ...

class EmailProfile(_message.Message):
    __slots__ = ("keep_domain", "replacement_domain", "method", "alphabet")
    KEEP_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ALPHABET_FIELD_NUMBER: _ClassVar[int]
    keep_domain: bool
    replacement_domain: str
    method: ShapeMethod
    alphabet: Alphabet
    def __init__(self, keep_domain: _Optional[bool] = ..., replacement_domain: _Optional[str] = ..., method: _Optional[_Union[ShapeMethod, str]] = ..., alphabet: _Optional[_Union[Alphabet, str]] = ...) -> None: ...

class MaskingProfile(_message.Message):
    __slots__ = ("keep_first", "keep_last", "mask_character", "preserve_separators", "keep_email_domain")
    KEEP_FIRST_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    MASK_CHARACTER_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_SEPARATORS_FIELD_NUMBER: _ClassVar[int]
    KEEP_EMAIL_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    keep_first: int
    keep_last: int
    mask_character: str
    preserve_separators: bool
    keep_email_domain: bool
    def __init__(self, keep_first: _Optional[int] = ..., keep_last: _Optional[int] = ..., mask_character: _Optional[str] = ..., preserve_separators: _Optional[bool] = ..., keep_email_domain: _Optional[bool] = ...) -> None: ...

class TokenProfile(_message.Message):
    __slots__ = ("random", "deterministic", "format_preserving", "card_number", "ssn", "phone_number", "email", "masking")
    RANDOM_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    FORMAT_PRESERVING_FIELD_NUMBER: _ClassVar[int]
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SSN_FIELD_NUMBER: _ClassVar[int]
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    MASKING_FIELD_NUMBER: _ClassVar[int]
    random: RandomProfile
    deterministic: DeterministicProfile
    format_preserving: FormatPreservingProfile
    card_number: CardNumberProfile
    ssn: SsnProfile
    phone_number: PhoneNumberProfile
    email: EmailProfile
    masking: MaskingProfile
    def __init__(self, random: _Optional[_Union[RandomProfile, _Mapping]] = ..., deterministic: _Optional[_Union[DeterministicProfile, _Mapping]] = ..., format_preserving: _Optional[_Union[FormatPreservingProfile, _Mapping]] = ..., card_number: _Optional[_Union[CardNumberProfile, _Mapping]] = ..., ssn: _Optional[_Union[SsnProfile, _Mapping]] = ..., phone_number: _Optional[_Union[PhoneNumberProfile, _Mapping]] = ..., email: _Optional[_Union[EmailProfile, _Mapping]] = ..., masking: _Optional[_Union[MaskingProfile, _Mapping]] = ...) -> None: ...

class DetokenizeRule(_message.Message):
    __slots__ = ("principals", "view")
    PRINCIPALS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    principals: _containers.RepeatedScalarFieldContainer[str]
    view: DetokenizeView
    def __init__(self, principals: _Optional[_Iterable[str]] = ..., view: _Optional[_Union[DetokenizeView, str]] = ...) -> None: ...

class DetokenizePolicy(_message.Message):
    __slots__ = ("rules", "mask")
    RULES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[DetokenizeRule]
    mask: MaskingProfile
    def __init__(self, rules: _Optional[_Iterable[_Union[DetokenizeRule, _Mapping]]] = ..., mask: _Optional[_Union[MaskingProfile, _Mapping]] = ...) -> None: ...

class Field(_message.Message):
    __slots__ = ("name", "description", "profile", "key", "detokenize_policy", "default_ttl", "max_ttl", "subject_key_shredding", "require_subject_id", "max_value_length", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DETOKENIZE_POLICY_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_TTL_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KEY_SHREDDING_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    profile: TokenProfile
    key: str
    detokenize_policy: DetokenizePolicy
    default_ttl: _duration_pb2.Duration
    max_ttl: _duration_pb2.Duration
    subject_key_shredding: bool
    require_subject_id: bool
    max_value_length: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., profile: _Optional[_Union[TokenProfile, _Mapping]] = ..., key: _Optional[str] = ..., detokenize_policy: _Optional[_Union[DetokenizePolicy, _Mapping]] = ..., default_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., subject_key_shredding: _Optional[bool] = ..., require_subject_id: _Optional[bool] = ..., max_value_length: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class TokenRef(_message.Message):
    __slots__ = ("field", "token")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    field: str
    token: str
    def __init__(self, field: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class TokenizeItem(_message.Message):
    __slots__ = ("field", "value", "subject_id", "ttl")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    subject_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ..., subject_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TokenizedValue(_message.Message):
    __slots__ = ("token", "expire_time")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    token: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DetokenizedValue(_message.Message):
    __slots__ = ("value", "view")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    value: str
    view: DetokenizeView
    def __init__(self, value: _Optional[str] = ..., view: _Optional[_Union[DetokenizeView, str]] = ...) -> None: ...

class Rotation(_message.Message):
    __slots__ = ("name", "fields", "rotate_master_keys", "state", "entries_total", "entries_done", "create_time", "start_time", "end_time", "error_reason", "error_message", "requested_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ROTATE_MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_DONE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    rotate_master_keys: bool
    state: RotationState
    entries_total: int
    entries_done: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error_reason: str
    error_message: str
    requested_by: str
    def __init__(self, name: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., rotate_master_keys: _Optional[bool] = ..., state: _Optional[_Union[RotationState, str]] = ..., entries_total: _Optional[int] = ..., entries_done: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_reason: _Optional[str] = ..., error_message: _Optional[str] = ..., requested_by: _Optional[str] = ...) -> None: ...

class CreateFieldRequest(_message.Message):
    __slots__ = ("parent", "field_id", "field", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FIELD_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    field_id: str
    field: Field
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., field_id: _Optional[str] = ..., field: _Optional[_Union[Field, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateFieldResponse(_message.Message):
    __slots__ = ("field",)
    FIELD_FIELD_NUMBER: _ClassVar[int]
    field: Field
    def __init__(self, field: _Optional[_Union[Field, _Mapping]] = ...) -> None: ...

class GetFieldRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFieldResponse(_message.Message):
    __slots__ = ("field",)
    FIELD_FIELD_NUMBER: _ClassVar[int]
    field: Field
    def __init__(self, field: _Optional[_Union[Field, _Mapping]] = ...) -> None: ...

class ListFieldsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFieldsResponse(_message.Message):
    __slots__ = ("fields", "next_page_token")
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.RepeatedCompositeFieldContainer[Field]
    next_page_token: str
    def __init__(self, fields: _Optional[_Iterable[_Union[Field, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFieldRequest(_message.Message):
    __slots__ = ("field", "update_mask", "etag")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    field: Field
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, field: _Optional[_Union[Field, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateFieldResponse(_message.Message):
    __slots__ = ("field",)
    FIELD_FIELD_NUMBER: _ClassVar[int]
    field: Field
    def __init__(self, field: _Optional[_Union[Field, _Mapping]] = ...) -> None: ...

class DeleteFieldRequest(_message.Message):
    __slots__ = ("name", "force", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    etag: str
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteFieldResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("parent", "items", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    items: _containers.RepeatedCompositeFieldContainer[TokenizeItem]
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TokenizeItem, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenizedValue]
    def __init__(self, results: _Optional[_Iterable[_Union[TokenizedValue, _Mapping]]] = ...) -> None: ...

class DetokenizeRequest(_message.Message):
    __slots__ = ("parent", "items", "view", "purpose", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    items: _containers.RepeatedCompositeFieldContainer[TokenRef]
    view: DetokenizeView
    purpose: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TokenRef, _Mapping]]] = ..., view: _Optional[_Union[DetokenizeView, str]] = ..., purpose: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DetokenizeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DetokenizedValue]
    def __init__(self, results: _Optional[_Iterable[_Union[DetokenizedValue, _Mapping]]] = ...) -> None: ...

class DeleteTokensRequest(_message.Message):
    __slots__ = ("parent", "items", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    items: _containers.RepeatedCompositeFieldContainer[TokenRef]
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., items: _Optional[_Iterable[_Union[TokenRef, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteTokensResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class ForgetSubjectRequest(_message.Message):
    __slots__ = ("parent", "subject_id", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    subject_id: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., subject_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ForgetSubjectResponse(_message.Message):
    __slots__ = ("deleted_count", "deleted_by_field", "subject_key_destroyed", "forget_time", "subject_key_deletions")
    class DeletedByFieldEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KEY_DESTROYED_FIELD_NUMBER: _ClassVar[int]
    FORGET_TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_KEY_DELETIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    deleted_by_field: _containers.ScalarMap[str, int]
    subject_key_destroyed: bool
    forget_time: _timestamp_pb2.Timestamp
    subject_key_deletions: _containers.RepeatedCompositeFieldContainer[SubjectKeyDeletion]
    def __init__(self, deleted_count: _Optional[int] = ..., deleted_by_field: _Optional[_Mapping[str, int]] = ..., subject_key_destroyed: _Optional[bool] = ..., forget_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject_key_deletions: _Optional[_Iterable[_Union[SubjectKeyDeletion, _Mapping]]] = ...) -> None: ...

class SubjectKeyDeletion(_message.Message):
    __slots__ = ("field", "deletion_time")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DELETION_TIME_FIELD_NUMBER: _ClassVar[int]
    field: str
    deletion_time: _timestamp_pb2.Timestamp
    def __init__(self, field: _Optional[str] = ..., deletion_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RotateKeysRequest(_message.Message):
    __slots__ = ("parent", "fields", "rotate_master_keys", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ROTATE_MASTER_KEYS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    rotate_master_keys: bool
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., rotate_master_keys: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class RotateKeysResponse(_message.Message):
    __slots__ = ("rotation",)
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    rotation: Rotation
    def __init__(self, rotation: _Optional[_Union[Rotation, _Mapping]] = ...) -> None: ...

class GetRotationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetRotationResponse(_message.Message):
    __slots__ = ("rotation",)
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    rotation: Rotation
    def __init__(self, rotation: _Optional[_Union[Rotation, _Mapping]] = ...) -> None: ...

class ListRotationsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRotationsResponse(_message.Message):
    __slots__ = ("rotations", "next_page_token")
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rotations: _containers.RepeatedCompositeFieldContainer[Rotation]
    next_page_token: str
    def __init__(self, rotations: _Optional[_Iterable[_Union[Rotation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelRotationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelRotationResponse(_message.Message):
    __slots__ = ("rotation",)
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    rotation: Rotation
    def __init__(self, rotation: _Optional[_Union[Rotation, _Mapping]] = ...) -> None: ...
