import datetime

from google.protobuf import duration_pb2 as _duration_pb2
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
    ERROR_REASON_DOCUMENT_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_DOCUMENT_MALFORMED: _ClassVar[ErrorReason]
    ERROR_REASON_POLICY_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_POLICY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_POLICY_ETAG_MISMATCH: _ClassVar[ErrorReason]

class RefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSAL_REASON_UNSPECIFIED: _ClassVar[RefusalReason]
    REFUSAL_REASON_SIGNATURE_INVALID: _ClassVar[RefusalReason]
    REFUSAL_REASON_CHAIN_INVALID: _ClassVar[RefusalReason]
    REFUSAL_REASON_ROOT_NOT_TRUSTED: _ClassVar[RefusalReason]
    REFUSAL_REASON_CERTIFICATE_EXPIRED: _ClassVar[RefusalReason]
    REFUSAL_REASON_CERTIFICATE_CONSTRAINTS: _ClassVar[RefusalReason]
    REFUSAL_REASON_DOCUMENT_STALE: _ClassVar[RefusalReason]
    REFUSAL_REASON_NONCE_UNKNOWN: _ClassVar[RefusalReason]
    REFUSAL_REASON_NONCE_REPLAYED: _ClassVar[RefusalReason]
    REFUSAL_REASON_NONCE_MISSING: _ClassVar[RefusalReason]
    REFUSAL_REASON_PCR_MISMATCH: _ClassVar[RefusalReason]
    REFUSAL_REASON_DEBUG_ENCLAVE: _ClassVar[RefusalReason]
    REFUSAL_REASON_PUBLIC_KEY_MISSING: _ClassVar[RefusalReason]
    REFUSAL_REASON_USER_DATA_MISMATCH: _ClassVar[RefusalReason]
    REFUSAL_REASON_DIGEST_UNSUPPORTED: _ClassVar[RefusalReason]
    REFUSAL_REASON_PUBLIC_KEY_UNSUPPORTED: _ClassVar[RefusalReason]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_ACCEPTED: _ClassVar[Verdict]
    VERDICT_REJECTED: _ClassVar[Verdict]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_DOCUMENT_TOO_LARGE: ErrorReason
ERROR_REASON_DOCUMENT_MALFORMED: ErrorReason
ERROR_REASON_POLICY_NOT_FOUND: ErrorReason
ERROR_REASON_POLICY_INVALID: ErrorReason
ERROR_REASON_POLICY_ETAG_MISMATCH: ErrorReason
REFUSAL_REASON_UNSPECIFIED: RefusalReason
REFUSAL_REASON_SIGNATURE_INVALID: RefusalReason
REFUSAL_REASON_CHAIN_INVALID: RefusalReason
REFUSAL_REASON_ROOT_NOT_TRUSTED: RefusalReason
REFUSAL_REASON_CERTIFICATE_EXPIRED: RefusalReason
REFUSAL_REASON_CERTIFICATE_CONSTRAINTS: RefusalReason
REFUSAL_REASON_DOCUMENT_STALE: RefusalReason
REFUSAL_REASON_NONCE_UNKNOWN: RefusalReason
REFUSAL_REASON_NONCE_REPLAYED: RefusalReason
REFUSAL_REASON_NONCE_MISSING: RefusalReason
REFUSAL_REASON_PCR_MISMATCH: RefusalReason
REFUSAL_REASON_DEBUG_ENCLAVE: RefusalReason
REFUSAL_REASON_PUBLIC_KEY_MISSING: RefusalReason
REFUSAL_REASON_USER_DATA_MISMATCH: RefusalReason
REFUSAL_REASON_DIGEST_UNSUPPORTED: RefusalReason
REFUSAL_REASON_PUBLIC_KEY_UNSUPPORTED: RefusalReason
VERDICT_UNSPECIFIED: Verdict
VERDICT_ACCEPTED: Verdict
VERDICT_REJECTED: Verdict

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

class Policy(_message.Message):
    __slots__ = ("name", "allowed_pcr_sets", "allow_debug", "max_document_age", "require_nonce", "require_public_key", "required_user_data", "description", "etag", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PCR_SETS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEBUG_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_AGE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_NONCE_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_USER_DATA_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    allowed_pcr_sets: _containers.RepeatedCompositeFieldContainer[PcrSet]
    allow_debug: bool
    max_document_age: _duration_pb2.Duration
    require_nonce: bool
    require_public_key: bool
    required_user_data: bytes
    description: str
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., allowed_pcr_sets: _Optional[_Iterable[_Union[PcrSet, _Mapping]]] = ..., allow_debug: _Optional[bool] = ..., max_document_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., require_nonce: _Optional[bool] = ..., require_public_key: _Optional[bool] = ..., required_user_data: _Optional[bytes] = ..., description: _Optional[str] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueChallengeRequest(_message.Message):
    __slots__ = ("ttl",)
    TTL_FIELD_NUMBER: _ClassVar[int]
    ttl: _duration_pb2.Duration
    def __init__(self, ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class IssueChallengeResponse(_message.Message):
    __slots__ = ("nonce", "expire_time")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, nonce: _Optional[bytes] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VerifyAttestationRequest(_message.Message):
    __slots__ = ("document", "policy", "audience", "verification_time")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_TIME_FIELD_NUMBER: _ClassVar[int]
    document: bytes
    policy: str
    audience: str
    verification_time: _timestamp_pb2.Timestamp
    def __init__(self, document: _Optional[bytes] = ..., policy: _Optional[str] = ..., audience: _Optional[str] = ..., verification_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: RefusalReason
    message: str
    def __init__(self, reason: _Optional[_Union[RefusalReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Claims(_message.Message):
    __slots__ = ("module_id", "digest", "timestamp", "pcrs", "public_key", "user_data", "nonce", "debug_mode", "certificate_sha256")
    class PcrsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: bytes
        def __init__(self, key: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    USER_DATA_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DEBUG_MODE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    module_id: str
    digest: str
    timestamp: _timestamp_pb2.Timestamp
    pcrs: _containers.ScalarMap[int, bytes]
    public_key: bytes
    user_data: bytes
    nonce: bytes
    debug_mode: bool
    certificate_sha256: str
    def __init__(self, module_id: _Optional[str] = ..., digest: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pcrs: _Optional[_Mapping[int, bytes]] = ..., public_key: _Optional[bytes] = ..., user_data: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., debug_mode: _Optional[bool] = ..., certificate_sha256: _Optional[str] = ...) -> None: ...

class VerifyAttestationResponse(_message.Message):
    __slots__ = ("verdict", "refusals", "claims", "document_sha256", "policy", "policy_etag", "result_token", "result_token_expire_time")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ETAG_FIELD_NUMBER: _ClassVar[int]
    RESULT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_TOKEN_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    refusals: _containers.RepeatedCompositeFieldContainer[Refusal]
    claims: Claims
    document_sha256: str
    policy: str
    policy_etag: str
    result_token: str
    result_token_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., refusals: _Optional[_Iterable[_Union[Refusal, _Mapping]]] = ..., claims: _Optional[_Union[Claims, _Mapping]] = ..., document_sha256: _Optional[str] = ..., policy: _Optional[str] = ..., policy_etag: _Optional[str] = ..., result_token: _Optional[str] = ..., result_token_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutPolicyRequest(_message.Message):
    __slots__ = ("policy", "etag")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    etag: str
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class PutPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: Policy
    def __init__(self, policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ("policies", "next_page_token")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[Policy]
    next_page_token: str
    def __init__(self, policies: _Optional[_Iterable[_Union[Policy, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerificationResult(_message.Message):
    __slots__ = ("name", "kind", "policy", "policy_etag", "verdict", "refusal_reasons", "document_sha256", "module_id", "principal", "verify_time", "token_minted", "replay_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ETAG_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_REASONS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    VERIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_MINTED_FIELD_NUMBER: _ClassVar[int]
    REPLAY_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    policy: str
    policy_etag: str
    verdict: Verdict
    refusal_reasons: _containers.RepeatedScalarFieldContainer[RefusalReason]
    document_sha256: str
    module_id: str
    principal: str
    verify_time: _timestamp_pb2.Timestamp
    token_minted: bool
    replay_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., policy: _Optional[str] = ..., policy_etag: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., refusal_reasons: _Optional[_Iterable[_Union[RefusalReason, str]]] = ..., document_sha256: _Optional[str] = ..., module_id: _Optional[str] = ..., principal: _Optional[str] = ..., verify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token_minted: _Optional[bool] = ..., replay_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListVerificationResultsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "policy")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    policy: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class ListVerificationResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerificationResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[VerificationResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeletePolicyRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeletePolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVerificationKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVerificationKeysResponse(_message.Message):
    __slots__ = ("jwks_json", "issuer")
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    issuer: str
    def __init__(self, jwks_json: _Optional[str] = ..., issuer: _Optional[str] = ...) -> None: ...
