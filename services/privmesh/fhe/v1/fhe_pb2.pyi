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
    ERROR_REASON_MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_SESSION_EXPIRED: _ClassVar[ErrorReason]
    ERROR_REASON_PARAMETERS_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_KEYS_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_CHUNK_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_STREAM_OUT_OF_ORDER: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_DIGEST_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_MALFORMED: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_TYPE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_CONTEXT_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_KEYS_INCOMPLETE: _ClassVar[ErrorReason]
    ERROR_REASON_CIPHERTEXT_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_CIPHERTEXT_MALFORMED: _ClassVar[ErrorReason]
    ERROR_REASON_CIPHERTEXT_CONTEXT_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_INPUT_SHAPE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_TOO_MANY_SESSIONS: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_EVALUATION_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_TEST_MODELS_DISABLED: _ClassVar[ErrorReason]
    ERROR_REASON_TIME_LIMIT_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_DEVICE_MEMORY_EXHAUSTED: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_QUEUE_FULL: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_NOT_SUCCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_FINISHED: _ClassVar[ErrorReason]
    ERROR_REASON_JOB_INTERRUPTED: _ClassVar[ErrorReason]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_LINEAR_REGRESSION: _ClassVar[ModelKind]
    MODEL_KIND_LOGISTIC_REGRESSION: _ClassVar[ModelKind]
    MODEL_KIND_MLP: _ClassVar[ModelKind]

class ScalingTechnique(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCALING_TECHNIQUE_UNSPECIFIED: _ClassVar[ScalingTechnique]
    SCALING_TECHNIQUE_FIXED_MANUAL: _ClassVar[ScalingTechnique]
    SCALING_TECHNIQUE_FIXED_AUTO: _ClassVar[ScalingTechnique]
    SCALING_TECHNIQUE_FLEXIBLE_AUTO: _ClassVar[ScalingTechnique]
    SCALING_TECHNIQUE_FLEXIBLE_AUTO_EXT: _ClassVar[ScalingTechnique]

class SecurityLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECURITY_LEVEL_UNSPECIFIED: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_HESTD_128_CLASSIC: _ClassVar[SecurityLevel]
    SECURITY_LEVEL_HESTD_NOT_SET: _ClassVar[SecurityLevel]

class KeySwitchTechnique(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_SWITCH_TECHNIQUE_UNSPECIFIED: _ClassVar[KeySwitchTechnique]
    KEY_SWITCH_TECHNIQUE_HYBRID: _ClassVar[KeySwitchTechnique]
    KEY_SWITCH_TECHNIQUE_BV: _ClassVar[KeySwitchTechnique]

class SecretKeyDistribution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECRET_KEY_DISTRIBUTION_UNSPECIFIED: _ClassVar[SecretKeyDistribution]
    SECRET_KEY_DISTRIBUTION_UNIFORM_TERNARY: _ClassVar[SecretKeyDistribution]
    SECRET_KEY_DISTRIBUTION_SPARSE_TERNARY: _ClassVar[SecretKeyDistribution]
    SECRET_KEY_DISTRIBUTION_GAUSSIAN: _ClassVar[SecretKeyDistribution]

class PackingLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACKING_LAYOUT_UNSPECIFIED: _ClassVar[PackingLayout]
    PACKING_LAYOUT_SAMPLE_MAJOR: _ClassVar[PackingLayout]
    PACKING_LAYOUT_VALUE_MAJOR: _ClassVar[PackingLayout]

class PolynomialBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLYNOMIAL_BASIS_UNSPECIFIED: _ClassVar[PolynomialBasis]
    POLYNOMIAL_BASIS_POWER: _ClassVar[PolynomialBasis]
    POLYNOMIAL_BASIS_CHEBYSHEV: _ClassVar[PolynomialBasis]

class ActivationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_KIND_UNSPECIFIED: _ClassVar[ActivationKind]
    ACTIVATION_KIND_IDENTITY: _ClassVar[ActivationKind]
    ACTIVATION_KIND_SQUARE: _ClassVar[ActivationKind]
    ACTIVATION_KIND_POLYNOMIAL: _ClassVar[ActivationKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class KeyPartKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_PART_KIND_UNSPECIFIED: _ClassVar[KeyPartKind]
    KEY_PART_KIND_CRYPTO_CONTEXT: _ClassVar[KeyPartKind]
    KEY_PART_KIND_PUBLIC_KEY: _ClassVar[KeyPartKind]
    KEY_PART_KIND_RELINEARIZATION_KEY: _ClassVar[KeyPartKind]
    KEY_PART_KIND_ROTATION_KEYS: _ClassVar[KeyPartKind]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_MODEL_NOT_FOUND: ErrorReason
ERROR_REASON_SESSION_NOT_FOUND: ErrorReason
ERROR_REASON_SESSION_EXPIRED: ErrorReason
ERROR_REASON_PARAMETERS_MISMATCH: ErrorReason
ERROR_REASON_KEYS_TOO_LARGE: ErrorReason
ERROR_REASON_CHUNK_TOO_LARGE: ErrorReason
ERROR_REASON_STREAM_OUT_OF_ORDER: ErrorReason
ERROR_REASON_KEY_DIGEST_MISMATCH: ErrorReason
ERROR_REASON_KEY_MALFORMED: ErrorReason
ERROR_REASON_KEY_TYPE_MISMATCH: ErrorReason
ERROR_REASON_KEY_CONTEXT_MISMATCH: ErrorReason
ERROR_REASON_KEYS_INCOMPLETE: ErrorReason
ERROR_REASON_CIPHERTEXT_TOO_LARGE: ErrorReason
ERROR_REASON_CIPHERTEXT_MALFORMED: ErrorReason
ERROR_REASON_CIPHERTEXT_CONTEXT_MISMATCH: ErrorReason
ERROR_REASON_INPUT_SHAPE_MISMATCH: ErrorReason
ERROR_REASON_TOO_MANY_SESSIONS: ErrorReason
ERROR_REASON_REQUEST_ID_CONFLICT: ErrorReason
ERROR_REASON_EVALUATION_FAILED: ErrorReason
ERROR_REASON_MODEL_INVALID: ErrorReason
ERROR_REASON_MODEL_ALREADY_EXISTS: ErrorReason
ERROR_REASON_TEST_MODELS_DISABLED: ErrorReason
ERROR_REASON_TIME_LIMIT_EXCEEDED: ErrorReason
ERROR_REASON_DEVICE_MEMORY_EXHAUSTED: ErrorReason
ERROR_REASON_JOB_NOT_FOUND: ErrorReason
ERROR_REASON_JOB_QUEUE_FULL: ErrorReason
ERROR_REASON_JOB_NOT_SUCCEEDED: ErrorReason
ERROR_REASON_JOB_FINISHED: ErrorReason
ERROR_REASON_JOB_INTERRUPTED: ErrorReason
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_LINEAR_REGRESSION: ModelKind
MODEL_KIND_LOGISTIC_REGRESSION: ModelKind
MODEL_KIND_MLP: ModelKind
SCALING_TECHNIQUE_UNSPECIFIED: ScalingTechnique
SCALING_TECHNIQUE_FIXED_MANUAL: ScalingTechnique
SCALING_TECHNIQUE_FIXED_AUTO: ScalingTechnique
SCALING_TECHNIQUE_FLEXIBLE_AUTO: ScalingTechnique
SCALING_TECHNIQUE_FLEXIBLE_AUTO_EXT: ScalingTechnique
SECURITY_LEVEL_UNSPECIFIED: SecurityLevel
SECURITY_LEVEL_HESTD_128_CLASSIC: SecurityLevel
SECURITY_LEVEL_HESTD_NOT_SET: SecurityLevel
KEY_SWITCH_TECHNIQUE_UNSPECIFIED: KeySwitchTechnique
KEY_SWITCH_TECHNIQUE_HYBRID: KeySwitchTechnique
KEY_SWITCH_TECHNIQUE_BV: KeySwitchTechnique
SECRET_KEY_DISTRIBUTION_UNSPECIFIED: SecretKeyDistribution
SECRET_KEY_DISTRIBUTION_UNIFORM_TERNARY: SecretKeyDistribution
SECRET_KEY_DISTRIBUTION_SPARSE_TERNARY: SecretKeyDistribution
SECRET_KEY_DISTRIBUTION_GAUSSIAN: SecretKeyDistribution
PACKING_LAYOUT_UNSPECIFIED: PackingLayout
PACKING_LAYOUT_SAMPLE_MAJOR: PackingLayout
PACKING_LAYOUT_VALUE_MAJOR: PackingLayout
POLYNOMIAL_BASIS_UNSPECIFIED: PolynomialBasis
POLYNOMIAL_BASIS_POWER: PolynomialBasis
POLYNOMIAL_BASIS_CHEBYSHEV: PolynomialBasis
ACTIVATION_KIND_UNSPECIFIED: ActivationKind
ACTIVATION_KIND_IDENTITY: ActivationKind
ACTIVATION_KIND_SQUARE: ActivationKind
ACTIVATION_KIND_POLYNOMIAL: ActivationKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
KEY_PART_KIND_UNSPECIFIED: KeyPartKind
KEY_PART_KIND_CRYPTO_CONTEXT: KeyPartKind
KEY_PART_KIND_PUBLIC_KEY: KeyPartKind
KEY_PART_KIND_RELINEARIZATION_KEY: KeyPartKind
KEY_PART_KIND_ROTATION_KEYS: KeyPartKind

class CkksParameters(_message.Message):
    __slots__ = ("ring_dimension", "multiplicative_depth", "scaling_mod_size", "first_mod_size", "scaling_technique", "security_level", "batch_size", "rotation_indices", "key_switch_technique", "num_large_digits", "secret_key_distribution")
    RING_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MULTIPLICATIVE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    SCALING_MOD_SIZE_FIELD_NUMBER: _ClassVar[int]
    FIRST_MOD_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCALING_TECHNIQUE_FIELD_NUMBER: _ClassVar[int]
    SECURITY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_INDICES_FIELD_NUMBER: _ClassVar[int]
    KEY_SWITCH_TECHNIQUE_FIELD_NUMBER: _ClassVar[int]
    NUM_LARGE_DIGITS_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEY_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    ring_dimension: int
    multiplicative_depth: int
    scaling_mod_size: int
    first_mod_size: int
    scaling_technique: ScalingTechnique
    security_level: SecurityLevel
    batch_size: int
    rotation_indices: _containers.RepeatedScalarFieldContainer[int]
    key_switch_technique: KeySwitchTechnique
    num_large_digits: int
    secret_key_distribution: SecretKeyDistribution
    def __init__(self, ring_dimension: _Optional[int] = ..., multiplicative_depth: _Optional[int] = ..., scaling_mod_size: _Optional[int] = ..., first_mod_size: _Optional[int] = ..., scaling_technique: _Optional[_Union[ScalingTechnique, str]] = ..., security_level: _Optional[_Union[SecurityLevel, str]] = ..., batch_size: _Optional[int] = ..., rotation_indices: _Optional[_Iterable[int]] = ..., key_switch_technique: _Optional[_Union[KeySwitchTechnique, str]] = ..., num_large_digits: _Optional[int] = ..., secret_key_distribution: _Optional[_Union[SecretKeyDistribution, str]] = ...) -> None: ...

class InputPacking(_message.Message):
    __slots__ = ("features_per_sample", "samples_per_ciphertext", "layout", "stride", "ciphertexts_per_input")
    FEATURES_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_PER_INPUT_FIELD_NUMBER: _ClassVar[int]
    features_per_sample: int
    samples_per_ciphertext: int
    layout: PackingLayout
    stride: int
    ciphertexts_per_input: int
    def __init__(self, features_per_sample: _Optional[int] = ..., samples_per_ciphertext: _Optional[int] = ..., layout: _Optional[_Union[PackingLayout, str]] = ..., stride: _Optional[int] = ..., ciphertexts_per_input: _Optional[int] = ...) -> None: ...

class OutputPacking(_message.Message):
    __slots__ = ("values_per_sample", "layout", "stride", "ciphertexts_per_output", "value_names")
    VALUES_PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_PER_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    VALUE_NAMES_FIELD_NUMBER: _ClassVar[int]
    values_per_sample: int
    layout: PackingLayout
    stride: int
    ciphertexts_per_output: int
    value_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values_per_sample: _Optional[int] = ..., layout: _Optional[_Union[PackingLayout, str]] = ..., stride: _Optional[int] = ..., ciphertexts_per_output: _Optional[int] = ..., value_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "offset", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: float
    scale: float
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[float] = ..., scale: _Optional[float] = ...) -> None: ...

class PolynomialApproximation(_message.Message):
    __slots__ = ("degree", "interval_min", "interval_max", "basis", "coefficients", "max_abs_error", "approximates")
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MIN_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MAX_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    APPROXIMATES_FIELD_NUMBER: _ClassVar[int]
    degree: int
    interval_min: float
    interval_max: float
    basis: PolynomialBasis
    coefficients: _containers.RepeatedScalarFieldContainer[float]
    max_abs_error: float
    approximates: str
    def __init__(self, degree: _Optional[int] = ..., interval_min: _Optional[float] = ..., interval_max: _Optional[float] = ..., basis: _Optional[_Union[PolynomialBasis, str]] = ..., coefficients: _Optional[_Iterable[float]] = ..., max_abs_error: _Optional[float] = ..., approximates: _Optional[str] = ...) -> None: ...

class LinearRegressionSpec(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogisticRegressionSpec(_message.Message):
    __slots__ = ("sigmoid",)
    SIGMOID_FIELD_NUMBER: _ClassVar[int]
    sigmoid: PolynomialApproximation
    def __init__(self, sigmoid: _Optional[_Union[PolynomialApproximation, _Mapping]] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("kind", "polynomial")
    KIND_FIELD_NUMBER: _ClassVar[int]
    POLYNOMIAL_FIELD_NUMBER: _ClassVar[int]
    kind: ActivationKind
    polynomial: PolynomialApproximation
    def __init__(self, kind: _Optional[_Union[ActivationKind, str]] = ..., polynomial: _Optional[_Union[PolynomialApproximation, _Mapping]] = ...) -> None: ...

class MlpLayer(_message.Message):
    __slots__ = ("units", "activation")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    units: int
    activation: Activation
    def __init__(self, units: _Optional[int] = ..., activation: _Optional[_Union[Activation, _Mapping]] = ...) -> None: ...

class MlpSpec(_message.Message):
    __slots__ = ("layers",)
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[MlpLayer]
    def __init__(self, layers: _Optional[_Iterable[_Union[MlpLayer, _Mapping]]] = ...) -> None: ...

class ModelLimits(_message.Message):
    __slots__ = ("max_total_key_bytes", "max_ciphertext_bytes", "max_inputs_per_stream")
    MAX_TOTAL_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CIPHERTEXT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    max_total_key_bytes: int
    max_ciphertext_bytes: int
    max_inputs_per_stream: int
    def __init__(self, max_total_key_bytes: _Optional[int] = ..., max_ciphertext_bytes: _Optional[int] = ..., max_inputs_per_stream: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "display_name", "description", "kind", "linear_regression", "logistic_regression", "mlp", "parameters", "required_key_parts", "features", "input_packing", "output_packing", "tolerance", "limits", "weights_sha256", "etag", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LINEAR_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    LOGISTIC_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_KEY_PARTS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    INPUT_PACKING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PACKING_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    kind: ModelKind
    linear_regression: LinearRegressionSpec
    logistic_regression: LogisticRegressionSpec
    mlp: MlpSpec
    parameters: CkksParameters
    required_key_parts: _containers.RepeatedScalarFieldContainer[KeyPartKind]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    input_packing: InputPacking
    output_packing: OutputPacking
    tolerance: float
    limits: ModelLimits
    weights_sha256: str
    etag: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., linear_regression: _Optional[_Union[LinearRegressionSpec, _Mapping]] = ..., logistic_regression: _Optional[_Union[LogisticRegressionSpec, _Mapping]] = ..., mlp: _Optional[_Union[MlpSpec, _Mapping]] = ..., parameters: _Optional[_Union[CkksParameters, _Mapping]] = ..., required_key_parts: _Optional[_Iterable[_Union[KeyPartKind, str]]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., input_packing: _Optional[_Union[InputPacking, _Mapping]] = ..., output_packing: _Optional[_Union[OutputPacking, _Mapping]] = ..., tolerance: _Optional[float] = ..., limits: _Optional[_Union[ModelLimits, _Mapping]] = ..., weights_sha256: _Optional[str] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class KeyPartInfo(_message.Message):
    __slots__ = ("kind", "size_bytes", "sha256")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    kind: KeyPartKind
    size_bytes: int
    sha256: bytes
    def __init__(self, kind: _Optional[_Union[KeyPartKind, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("name", "model", "model_etag", "owner", "key_parts", "public_key_fingerprint", "create_time", "expire_time", "inference_count", "last_infer_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ETAG_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    KEY_PARTS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_INFER_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_etag: str
    owner: str
    key_parts: _containers.RepeatedCompositeFieldContainer[KeyPartInfo]
    public_key_fingerprint: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    inference_count: int
    last_infer_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_etag: _Optional[str] = ..., owner: _Optional[str] = ..., key_parts: _Optional[_Iterable[_Union[KeyPartInfo, _Mapping]]] = ..., public_key_fingerprint: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., inference_count: _Optional[int] = ..., last_infer_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kind")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kind: ModelKind
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class RegisterKeysHeader(_message.Message):
    __slots__ = ("model", "parameters", "key_parts", "ttl", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    KEY_PARTS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    parameters: CkksParameters
    key_parts: _containers.RepeatedCompositeFieldContainer[KeyPartInfo]
    ttl: _duration_pb2.Duration
    request_id: str
    def __init__(self, model: _Optional[str] = ..., parameters: _Optional[_Union[CkksParameters, _Mapping]] = ..., key_parts: _Optional[_Iterable[_Union[KeyPartInfo, _Mapping]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class KeyChunk(_message.Message):
    __slots__ = ("kind", "offset", "data")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    kind: KeyPartKind
    offset: int
    data: bytes
    def __init__(self, kind: _Optional[_Union[KeyPartKind, str]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterKeysRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: RegisterKeysHeader
    chunk: KeyChunk
    def __init__(self, header: _Optional[_Union[RegisterKeysHeader, _Mapping]] = ..., chunk: _Optional[_Union[KeyChunk, _Mapping]] = ...) -> None: ...

class RegisterKeysResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CiphertextInfo(_message.Message):
    __slots__ = ("size_bytes",)
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    def __init__(self, size_bytes: _Optional[int] = ...) -> None: ...

class CiphertextChunk(_message.Message):
    __slots__ = ("input_id", "ciphertext_index", "offset", "data")
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    input_id: int
    ciphertext_index: int
    offset: int
    data: bytes
    def __init__(self, input_id: _Optional[int] = ..., ciphertext_index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferStart(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class InferInput(_message.Message):
    __slots__ = ("input_id", "ciphertexts", "sample_count")
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    input_id: int
    ciphertexts: _containers.RepeatedCompositeFieldContainer[CiphertextInfo]
    sample_count: int
    def __init__(self, input_id: _Optional[int] = ..., ciphertexts: _Optional[_Iterable[_Union[CiphertextInfo, _Mapping]]] = ..., sample_count: _Optional[int] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("start", "input", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: InferStart
    input: InferInput
    chunk: CiphertextChunk
    def __init__(self, start: _Optional[_Union[InferStart, _Mapping]] = ..., input: _Optional[_Union[InferInput, _Mapping]] = ..., chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ...) -> None: ...

class InferOutput(_message.Message):
    __slots__ = ("input_id", "ciphertexts", "sample_count", "evaluation_duration", "evaluator")
    INPUT_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_DURATION_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    input_id: int
    ciphertexts: _containers.RepeatedCompositeFieldContainer[CiphertextInfo]
    sample_count: int
    evaluation_duration: _duration_pb2.Duration
    evaluator: str
    def __init__(self, input_id: _Optional[int] = ..., ciphertexts: _Optional[_Iterable[_Union[CiphertextInfo, _Mapping]]] = ..., sample_count: _Optional[int] = ..., evaluation_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., evaluator: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("output", "chunk")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    output: InferOutput
    chunk: CiphertextChunk
    def __init__(self, output: _Optional[_Union[InferOutput, _Mapping]] = ..., chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("model_id", "model_file")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FILE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_file: bytes
    def __init__(self, model_id: _Optional[str] = ..., model_file: _Optional[bytes] = ...) -> None: ...

class CreateModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Job(_message.Message):
    __slots__ = ("name", "session", "model", "owner", "state", "input_count", "completed_input_count", "input_bytes", "failure_reason", "failure_message", "attempt_count", "create_time", "start_time", "end_time", "expire_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_INPUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    session: str
    model: str
    owner: str
    state: JobState
    input_count: int
    completed_input_count: int
    input_bytes: int
    failure_reason: ErrorReason
    failure_message: str
    attempt_count: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., session: _Optional[str] = ..., model: _Optional[str] = ..., owner: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., input_count: _Optional[int] = ..., completed_input_count: _Optional[int] = ..., input_bytes: _Optional[int] = ..., failure_reason: _Optional[_Union[ErrorReason, str]] = ..., failure_message: _Optional[str] = ..., attempt_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobStart(_message.Message):
    __slots__ = ("session", "input_count", "request_id")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session: str
    input_count: int
    request_id: str
    def __init__(self, session: _Optional[str] = ..., input_count: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("start", "input", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: JobStart
    input: InferInput
    chunk: CiphertextChunk
    def __init__(self, start: _Optional[_Union[JobStart, _Mapping]] = ..., input: _Optional[_Union[InferInput, _Mapping]] = ..., chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: JobState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetJobResultRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetJobResultResponse(_message.Message):
    __slots__ = ("output", "chunk")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    output: InferOutput
    chunk: CiphertextChunk
    def __init__(self, output: _Optional[_Union[InferOutput, _Mapping]] = ..., chunk: _Optional[_Union[CiphertextChunk, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...
