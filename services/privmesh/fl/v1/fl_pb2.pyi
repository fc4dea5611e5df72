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
    ERROR_REASON_FEDERATION_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_FEDERATION_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_SPEC_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_STRATEGY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_SECAGG_PARAMETERS_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_DP_PARAMETERS_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_DP_TARGET_UNREACHABLE: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_POLICY_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_PARTICIPANT_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_PARTICIPANT_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_PUBLIC_KEY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_PUBLIC_KEY_ALREADY_REGISTERED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_REQUIRED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_REJECTED: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_KEY_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_ATTESTATION_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_SUPERLINK_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_RUN_ALREADY_ACTIVE: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_ENOUGH_PARTICIPANTS: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_NOT_AVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_MODEL_DECRYPTION_DENIED: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_BROKER_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_ENGINE_FEATURE_UNSUPPORTED: _ClassVar[ErrorReason]
    ERROR_REASON_FLARE_SERVER_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_STARTUP_KIT_NOT_APPLICABLE: _ClassVar[ErrorReason]

class FlEngine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FL_ENGINE_UNSPECIFIED: _ClassVar[FlEngine]
    FL_ENGINE_FLOWER: _ClassVar[FlEngine]
    FL_ENGINE_FLARE: _ClassVar[FlEngine]

class MlpActivation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MLP_ACTIVATION_UNSPECIFIED: _ClassVar[MlpActivation]
    MLP_ACTIVATION_RELU: _ClassVar[MlpActivation]
    MLP_ACTIVATION_TANH: _ClassVar[MlpActivation]
    MLP_ACTIVATION_SQUARE: _ClassVar[MlpActivation]

class LocalOptimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOCAL_OPTIMIZER_UNSPECIFIED: _ClassVar[LocalOptimizer]
    LOCAL_OPTIMIZER_SGD: _ClassVar[LocalOptimizer]
    LOCAL_OPTIMIZER_ADAM: _ClassVar[LocalOptimizer]

class DpClippingMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DP_CLIPPING_MODE_UNSPECIFIED: _ClassVar[DpClippingMode]
    DP_CLIPPING_MODE_SERVER_SIDE_FIXED: _ClassVar[DpClippingMode]
    DP_CLIPPING_MODE_CLIENT_SIDE_FIXED: _ClassVar[DpClippingMode]

class DpAccountant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DP_ACCOUNTANT_UNSPECIFIED: _ClassVar[DpAccountant]
    DP_ACCOUNTANT_RDP: _ClassVar[DpAccountant]

class DpNoise(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DP_NOISE_UNSPECIFIED: _ClassVar[DpNoise]
    DP_NOISE_CENTRAL: _ClassVar[DpNoise]
    DP_NOISE_DISTRIBUTED: _ClassVar[DpNoise]

class PublicKeyFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUBLIC_KEY_FORMAT_UNSPECIFIED: _ClassVar[PublicKeyFormat]
    PUBLIC_KEY_FORMAT_PEM: _ClassVar[PublicKeyFormat]
    PUBLIC_KEY_FORMAT_SSH: _ClassVar[PublicKeyFormat]
    PUBLIC_KEY_FORMAT_RAW: _ClassVar[PublicKeyFormat]

class EcCurve(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EC_CURVE_UNSPECIFIED: _ClassVar[EcCurve]
    EC_CURVE_P256: _ClassVar[EcCurve]
    EC_CURVE_P384: _ClassVar[EcCurve]
    EC_CURVE_P521: _ClassVar[EcCurve]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_STOPPING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]

class RunEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_REASON_UNSPECIFIED: _ClassVar[RunEndReason]
    RUN_END_REASON_COMPLETED: _ClassVar[RunEndReason]
    RUN_END_REASON_STOPPED_BY_USER: _ClassVar[RunEndReason]
    RUN_END_REASON_PRIVACY_BUDGET_EXHAUSTED: _ClassVar[RunEndReason]
    RUN_END_REASON_NOT_ENOUGH_PARTICIPANTS: _ClassVar[RunEndReason]
    RUN_END_REASON_TOO_MANY_DROPOUTS: _ClassVar[RunEndReason]
    RUN_END_REASON_SUPERLINK_FAILED: _ClassVar[RunEndReason]
    RUN_END_REASON_MODEL_STORAGE_FAILED: _ClassVar[RunEndReason]
    RUN_END_REASON_INTERNAL: _ClassVar[RunEndReason]

class RoundState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_STATE_UNSPECIFIED: _ClassVar[RoundState]
    ROUND_STATE_RUNNING: _ClassVar[RoundState]
    ROUND_STATE_COMPLETED: _ClassVar[RoundState]
    ROUND_STATE_ABANDONED: _ClassVar[RoundState]

class RunView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_VIEW_UNSPECIFIED: _ClassVar[RunView]
    RUN_VIEW_BASIC: _ClassVar[RunView]
    RUN_VIEW_FULL: _ClassVar[RunView]

class DropReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DROP_REASON_UNSPECIFIED: _ClassVar[DropReason]
    DROP_REASON_TIMEOUT: _ClassVar[DropReason]
    DROP_REASON_DISCONNECTED: _ClassVar[DropReason]
    DROP_REASON_FAILED: _ClassVar[DropReason]
    DROP_REASON_REMOVED: _ClassVar[DropReason]

class ModelRepresentation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_REPRESENTATION_UNSPECIFIED: _ClassVar[ModelRepresentation]
    MODEL_REPRESENTATION_ENCRYPTED: _ClassVar[ModelRepresentation]
    MODEL_REPRESENTATION_DECRYPTED: _ClassVar[ModelRepresentation]

class EnvelopeFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENVELOPE_FORMAT_UNSPECIFIED: _ClassVar[EnvelopeFormat]
    ENVELOPE_FORMAT_AWS_ENCRYPTION_SDK: _ClassVar[EnvelopeFormat]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_FEDERATION_NOT_FOUND: ErrorReason
ERROR_REASON_FEDERATION_ALREADY_EXISTS: ErrorReason
ERROR_REASON_MODEL_SPEC_INVALID: ErrorReason
ERROR_REASON_STRATEGY_INVALID: ErrorReason
ERROR_REASON_SECAGG_PARAMETERS_INVALID: ErrorReason
ERROR_REASON_DP_PARAMETERS_INVALID: ErrorReason
ERROR_REASON_DP_TARGET_UNREACHABLE: ErrorReason
ERROR_REASON_ATTESTATION_POLICY_NOT_FOUND: ErrorReason
ERROR_REASON_PARTICIPANT_NOT_FOUND: ErrorReason
ERROR_REASON_PARTICIPANT_ALREADY_EXISTS: ErrorReason
ERROR_REASON_PUBLIC_KEY_INVALID: ErrorReason
ERROR_REASON_PUBLIC_KEY_ALREADY_REGISTERED: ErrorReason
ERROR_REASON_ATTESTATION_REQUIRED: ErrorReason
ERROR_REASON_ATTESTATION_REJECTED: ErrorReason
ERROR_REASON_ATTESTATION_KEY_MISMATCH: ErrorReason
ERROR_REASON_ATTESTATION_UNAVAILABLE: ErrorReason
ERROR_REASON_SUPERLINK_UNAVAILABLE: ErrorReason
ERROR_REASON_RUN_NOT_FOUND: ErrorReason
ERROR_REASON_RUN_ALREADY_ACTIVE: ErrorReason
ERROR_REASON_NOT_ENOUGH_PARTICIPANTS: ErrorReason
ERROR_REASON_MODEL_NOT_AVAILABLE: ErrorReason
ERROR_REASON_MODEL_DECRYPTION_DENIED: ErrorReason
ERROR_REASON_KEY_BROKER_UNAVAILABLE: ErrorReason
ERROR_REASON_REQUEST_ID_CONFLICT: ErrorReason
ERROR_REASON_ENGINE_FEATURE_UNSUPPORTED: ErrorReason
ERROR_REASON_FLARE_SERVER_UNAVAILABLE: ErrorReason
ERROR_REASON_STARTUP_KIT_NOT_APPLICABLE: ErrorReason
FL_ENGINE_UNSPECIFIED: FlEngine
FL_ENGINE_FLOWER: FlEngine
FL_ENGINE_FLARE: FlEngine
MLP_ACTIVATION_UNSPECIFIED: MlpActivation
MLP_ACTIVATION_RELU: MlpActivation
MLP_ACTIVATION_TANH: MlpActivation
MLP_ACTIVATION_SQUARE: MlpActivation
LOCAL_OPTIMIZER_UNSPECIFIED: LocalOptimizer
LOCAL_OPTIMIZER_SGD: LocalOptimizer
LOCAL_OPTIMIZER_ADAM: LocalOptimizer
DP_CLIPPING_MODE_UNSPECIFIED: DpClippingMode
DP_CLIPPING_MODE_SERVER_SIDE_FIXED: DpClippingMode
DP_CLIPPING_MODE_CLIENT_SIDE_FIXED: DpClippingMode
DP_ACCOUNTANT_UNSPECIFIED: DpAccountant
DP_ACCOUNTANT_RDP: DpAccountant
DP_NOISE_UNSPECIFIED: DpNoise
DP_NOISE_CENTRAL: DpNoise
DP_NOISE_DISTRIBUTED: DpNoise
PUBLIC_KEY_FORMAT_UNSPECIFIED: PublicKeyFormat
PUBLIC_KEY_FORMAT_PEM: PublicKeyFormat
PUBLIC_KEY_FORMAT_SSH: PublicKeyFormat
PUBLIC_KEY_FORMAT_RAW: PublicKeyFormat
EC_CURVE_UNSPECIFIED: EcCurve
EC_CURVE_P256: EcCurve
EC_CURVE_P384: EcCurve
EC_CURVE_P521: EcCurve
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_STOPPING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_STOPPED: RunState
RUN_STATE_FAILED: RunState
RUN_END_REASON_UNSPECIFIED: RunEndReason
RUN_END_REASON_COMPLETED: RunEndReason
RUN_END_REASON_STOPPED_BY_USER: RunEndReason
RUN_END_REASON_PRIVACY_BUDGET_EXHAUSTED: RunEndReason
RUN_END_REASON_NOT_ENOUGH_PARTICIPANTS: RunEndReason
RUN_END_REASON_TOO_MANY_DROPOUTS: RunEndReason
RUN_END_REASON_SUPERLINK_FAILED: RunEndReason
RUN_END_REASON_MODEL_STORAGE_FAILED: RunEndReason
RUN_END_REASON_INTERNAL: RunEndReason
ROUND_STATE_UNSPECIFIED: RoundState
ROUND_STATE_RUNNING: RoundState
ROUND_STATE_COMPLETED: RoundState
ROUND_STATE_ABANDONED: RoundState
RUN_VIEW_UNSPECIFIED: RunView
RUN_VIEW_BASIC: RunView
RUN_VIEW_FULL: RunView
DROP_REASON_UNSPECIFIED: DropReason
DROP_REASON_TIMEOUT: DropReason
DROP_REASON_DISCONNECTED: DropReason
DROP_REASON_FAILED: DropReason
DROP_REASON_REMOVED: DropReason
MODEL_REPRESENTATION_UNSPECIFIED: ModelRepresentation
MODEL_REPRESENTATION_ENCRYPTED: ModelRepresentation
MODEL_REPRESENTATION_DECRYPTED: ModelRepresentation
ENVELOPE_FORMAT_UNSPECIFIED: EnvelopeFormat
ENVELOPE_FORMAT_AWS_ENCRYPTION_SDK: EnvelopeFormat

class LogisticRegressionSpec(_message.Message):
    __slots__ = ("l2_penalty",)
    L2_PENALTY_FIELD_NUMBER: _ClassVar[int]
    l2_penalty: float
    def __init__(self, l2_penalty: _Optional[float] = ...) -> None: ...

class MlpSpec(_message.Message):
    __slots__ = ("hidden_units", "activation")
    HIDDEN_UNITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    hidden_units: _containers.RepeatedScalarFieldContainer[int]
    activation: MlpActivation
    def __init__(self, hidden_units: _Optional[_Iterable[int]] = ..., activation: _Optional[_Union[MlpActivation, str]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("feature_count", "class_count", "logistic_regression", "mlp", "feature_names", "label_name", "seed")
    FEATURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLASS_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOGISTIC_REGRESSION_FIELD_NUMBER: _ClassVar[int]
    MLP_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    feature_count: int
    class_count: int
    logistic_regression: LogisticRegressionSpec
    mlp: MlpSpec
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    label_name: str
    seed: int
    def __init__(self, feature_count: _Optional[int] = ..., class_count: _Optional[int] = ..., logistic_regression: _Optional[_Union[LogisticRegressionSpec, _Mapping]] = ..., mlp: _Optional[_Union[MlpSpec, _Mapping]] = ..., feature_names: _Optional[_Iterable[str]] = ..., label_name: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class LocalTraining(_message.Message):
    __slots__ = ("epochs", "batch_size", "learning_rate", "optimizer")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: LocalOptimizer
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., optimizer: _Optional[_Union[LocalOptimizer, str]] = ...) -> None: ...

class FedAvgParameters(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FedProxParameters(_message.Message):
    __slots__ = ("proximal_mu",)
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    proximal_mu: float
    def __init__(self, proximal_mu: _Optional[float] = ...) -> None: ...

class FedAdamParameters(_message.Message):
    __slots__ = ("server_learning_rate", "beta_1", "beta_2", "tau")
    SERVER_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BETA_1_FIELD_NUMBER: _ClassVar[int]
    BETA_2_FIELD_NUMBER: _ClassVar[int]
    TAU_FIELD_NUMBER: _ClassVar[int]
    server_learning_rate: float
    beta_1: float
    beta_2: float
    tau: float
    def __init__(self, server_learning_rate: _Optional[float] = ..., beta_1: _Optional[float] = ..., beta_2: _Optional[float] = ..., tau: _Optional[float] = ...) -> None: ...

class Strategy(_message.Message):
    __slots__ = ("fed_avg", "fed_prox", "fed_adam", "fraction_train", "fraction_evaluate")
    FED_AVG_FIELD_NUMBER: _ClassVar[int]
    FED_PROX_FIELD_NUMBER: _ClassVar[int]
    FED_ADAM_FIELD_NUMBER: _ClassVar[int]
    FRACTION_TRAIN_FIELD_NUMBER: _ClassVar[int]
    FRACTION_EVALUATE_FIELD_NUMBER: _ClassVar[int]
    fed_avg: FedAvgParameters
    fed_prox: FedProxParameters
    fed_adam: FedAdamParameters
    fraction_train: float
    fraction_evaluate: float
    def __init__(self, fed_avg: _Optional[_Union[FedAvgParameters, _Mapping]] = ..., fed_prox: _Optional[_Union[FedProxParameters, _Mapping]] = ..., fed_adam: _Optional[_Union[FedAdamParameters, _Mapping]] = ..., fraction_train: _Optional[float] = ..., fraction_evaluate: _Optional[float] = ...) -> None: ...

class SecureAggregation(_message.Message):
    __slots__ = ("num_shares", "num_shares_fraction", "reconstruction_threshold", "reconstruction_threshold_fraction", "clipping_range", "quantization_range", "modulus_range", "max_weight", "timeout")
    NUM_SHARES_FIELD_NUMBER: _ClassVar[int]
    NUM_SHARES_FRACTION_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_THRESHOLD_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CLIPPING_RANGE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_RANGE_FIELD_NUMBER: _ClassVar[int]
    MODULUS_RANGE_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    num_shares: int
    num_shares_fraction: float
    reconstruction_threshold: int
    reconstruction_threshold_fraction: float
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    timeout: _duration_pb2.Duration
    def __init__(self, num_shares: _Optional[int] = ..., num_shares_fraction: _Optional[float] = ..., reconstruction_threshold: _Optional[int] = ..., reconstruction_threshold_fraction: _Optional[float] = ..., clipping_range: _Optional[float] = ..., quantization_range: _Optional[int] = ..., modulus_range: _Optional[int] = ..., max_weight: _Optional[float] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DifferentialPrivacy(_message.Message):
    __slots__ = ("clipping_mode", "noise_multiplier", "clipping_norm", "delta", "target_epsilon", "accountant", "noise")
    CLIPPING_MODE_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    CLIPPING_NORM_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    clipping_mode: DpClippingMode
    noise_multiplier: float
    clipping_norm: float
    delta: float
    target_epsilon: float
    accountant: DpAccountant
    noise: DpNoise
    def __init__(self, clipping_mode: _Optional[_Union[DpClippingMode, str]] = ..., noise_multiplier: _Optional[float] = ..., clipping_norm: _Optional[float] = ..., delta: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., accountant: _Optional[_Union[DpAccountant, str]] = ..., noise: _Optional[_Union[DpNoise, str]] = ...) -> None: ...

class AdmissionPolicy(_message.Message):
    __slots__ = ("require_attestation", "attestation_policy")
    REQUIRE_ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_POLICY_FIELD_NUMBER: _ClassVar[int]
    require_attestation: bool
    attestation_policy: str
    def __init__(self, require_attestation: _Optional[bool] = ..., attestation_policy: _Optional[str] = ...) -> None: ...

class SuperLinkEndpoint(_message.Message):
    __slots__ = ("fleet_address", "root_certificates_pem")
    FLEET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROOT_CERTIFICATES_PEM_FIELD_NUMBER: _ClassVar[int]
    fleet_address: str
    root_certificates_pem: str
    def __init__(self, fleet_address: _Optional[str] = ..., root_certificates_pem: _Optional[str] = ...) -> None: ...

class FlareEndpoint(_message.Message):
    __slots__ = ("server_address", "root_certificate_pem", "project")
    SERVER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROOT_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    server_address: str
    root_certificate_pem: str
    project: str
    def __init__(self, server_address: _Optional[str] = ..., root_certificate_pem: _Optional[str] = ..., project: _Optional[str] = ...) -> None: ...

class Federation(_message.Message):
    __slots__ = ("name", "display_name", "description", "model", "local_training", "strategy", "num_rounds", "min_participants", "round_timeout", "participant_wait_timeout", "secure_aggregation", "differential_privacy", "admission", "model_key", "projected_epsilon", "superlink", "creator", "create_time", "engine", "flare")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TRAINING_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    NUM_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MIN_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ROUND_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIAL_PRIVACY_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_EPSILON_FIELD_NUMBER: _ClassVar[int]
    SUPERLINK_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    FLARE_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    description: str
    model: ModelSpec
    local_training: LocalTraining
    strategy: Strategy
    num_rounds: int
    min_participants: int
    round_timeout: _duration_pb2.Duration
    participant_wait_timeout: _duration_pb2.Duration
    secure_aggregation: SecureAggregation
    differential_privacy: DifferentialPrivacy
    admission: AdmissionPolicy
    model_key: str
    projected_epsilon: float
    superlink: SuperLinkEndpoint
    creator: str
    create_time: _timestamp_pb2.Timestamp
    engine: FlEngine
    flare: FlareEndpoint
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., local_training: _Optional[_Union[LocalTraining, _Mapping]] = ..., strategy: _Optional[_Union[Strategy, _Mapping]] = ..., num_rounds: _Optional[int] = ..., min_participants: _Optional[int] = ..., round_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., participant_wait_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., secure_aggregation: _Optional[_Union[SecureAggregation, _Mapping]] = ..., differential_privacy: _Optional[_Union[DifferentialPrivacy, _Mapping]] = ..., admission: _Optional[_Union[AdmissionPolicy, _Mapping]] = ..., model_key: _Optional[str] = ..., projected_epsilon: _Optional[float] = ..., superlink: _Optional[_Union[SuperLinkEndpoint, _Mapping]] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., engine: _Optional[_Union[FlEngine, str]] = ..., flare: _Optional[_Union[FlareEndpoint, _Mapping]] = ...) -> None: ...

class AdmissionAttestation(_message.Message):
    __slots__ = ("policy", "document_sha256", "module_id", "verify_time")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODULE_ID_FIELD_NUMBER: _ClassVar[int]
    VERIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    policy: str
    document_sha256: str
    module_id: str
    verify_time: _timestamp_pb2.Timestamp
    def __init__(self, policy: _Optional[str] = ..., document_sha256: _Optional[str] = ..., module_id: _Optional[str] = ..., verify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Participant(_message.Message):
    __slots__ = ("name", "display_name", "public_key_pem", "public_key_fingerprint", "curve", "attestation", "node_id", "connected", "last_seen_time", "registrant", "create_time", "flare_site")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    REGISTRANT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FLARE_SITE_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    public_key_pem: str
    public_key_fingerprint: str
    curve: EcCurve
    attestation: AdmissionAttestation
    node_id: int
    connected: bool
    last_seen_time: _timestamp_pb2.Timestamp
    registrant: str
    create_time: _timestamp_pb2.Timestamp
    flare_site: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., public_key_pem: _Optional[str] = ..., public_key_fingerprint: _Optional[str] = ..., curve: _Optional[_Union[EcCurve, str]] = ..., attestation: _Optional[_Union[AdmissionAttestation, _Mapping]] = ..., node_id: _Optional[int] = ..., connected: _Optional[bool] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., registrant: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., flare_site: _Optional[str] = ...) -> None: ...

class RoundMetrics(_message.Message):
    __slots__ = ("round", "state", "start_time", "end_time", "participants_selected", "participants_completed", "participants_dropped", "num_examples", "train_loss", "evaluate_loss", "metrics", "epsilon")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_SELECTED_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_LOSS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    round: int
    state: RoundState
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    participants_selected: int
    participants_completed: int
    participants_dropped: int
    num_examples: int
    train_loss: float
    evaluate_loss: float
    metrics: _containers.ScalarMap[str, float]
    epsilon: float
    def __init__(self, round: _Optional[int] = ..., state: _Optional[_Union[RoundState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., participants_selected: _Optional[int] = ..., participants_completed: _Optional[int] = ..., participants_dropped: _Optional[int] = ..., num_examples: _Optional[int] = ..., train_loss: _Optional[float] = ..., evaluate_loss: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class RunParticipant(_message.Message):
    __slots__ = ("participant", "rounds_completed", "rounds_dropped", "join_time", "active")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    JOIN_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    participant: str
    rounds_completed: int
    rounds_dropped: int
    join_time: _timestamp_pb2.Timestamp
    active: bool
    def __init__(self, participant: _Optional[str] = ..., rounds_completed: _Optional[int] = ..., rounds_dropped: _Optional[int] = ..., join_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active: _Optional[bool] = ...) -> None: ...

class PrivacySpent(_message.Message):
    __slots__ = ("epsilon", "delta", "target_epsilon", "accountant", "unnoised_aggregate_seen_by", "noise")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    TARGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTANT_FIELD_NUMBER: _ClassVar[int]
    UNNOISED_AGGREGATE_SEEN_BY_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    target_epsilon: float
    accountant: DpAccountant
    unnoised_aggregate_seen_by: str
    noise: DpNoise
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., target_epsilon: _Optional[float] = ..., accountant: _Optional[_Union[DpAccountant, str]] = ..., unnoised_aggregate_seen_by: _Optional[str] = ..., noise: _Optional[_Union[DpNoise, str]] = ...) -> None: ...

class EncryptionInfo(_message.Message):
    __slots__ = ("format", "key", "encryption_context")
    class EncryptionContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    format: EnvelopeFormat
    key: str
    encryption_context: _containers.ScalarMap[str, str]
    def __init__(self, format: _Optional[_Union[EnvelopeFormat, str]] = ..., key: _Optional[str] = ..., encryption_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StoredModel(_message.Message):
    __slots__ = ("name", "round", "encryption", "encrypted_size_bytes", "encrypted_sha256", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    round: int
    encryption: EncryptionInfo
    encrypted_size_bytes: int
    encrypted_sha256: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., round: _Optional[int] = ..., encryption: _Optional[_Union[EncryptionInfo, _Mapping]] = ..., encrypted_size_bytes: _Optional[int] = ..., encrypted_sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("name", "state", "end_reason", "end_message", "flower_run_id", "seed", "total_rounds", "completed_rounds", "rounds", "participants", "privacy", "model", "last_event_sequence", "starter", "create_time", "start_time", "end_time", "flare_job_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    END_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FLOWER_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STARTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FLARE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: RunState
    end_reason: RunEndReason
    end_message: str
    flower_run_id: int
    seed: int
    total_rounds: int
    completed_rounds: int
    rounds: _containers.RepeatedCompositeFieldContainer[RoundMetrics]
    participants: _containers.RepeatedCompositeFieldContainer[RunParticipant]
    privacy: PrivacySpent
    model: StoredModel
    last_event_sequence: int
    starter: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    flare_job_id: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., end_reason: _Optional[_Union[RunEndReason, str]] = ..., end_message: _Optional[str] = ..., flower_run_id: _Optional[int] = ..., seed: _Optional[int] = ..., total_rounds: _Optional[int] = ..., completed_rounds: _Optional[int] = ..., rounds: _Optional[_Iterable[_Union[RoundMetrics, _Mapping]]] = ..., participants: _Optional[_Iterable[_Union[RunParticipant, _Mapping]]] = ..., privacy: _Optional[_Union[PrivacySpent, _Mapping]] = ..., model: _Optional[_Union[StoredModel, _Mapping]] = ..., last_event_sequence: _Optional[int] = ..., starter: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., flare_job_id: _Optional[str] = ...) -> None: ...

class RoundStarted(_message.Message):
    __slots__ = ("round", "participants_selected")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_SELECTED_FIELD_NUMBER: _ClassVar[int]
    round: int
    participants_selected: int
    def __init__(self, round: _Optional[int] = ..., participants_selected: _Optional[int] = ...) -> None: ...

class RoundFinished(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: RoundMetrics
    def __init__(self, metrics: _Optional[_Union[RoundMetrics, _Mapping]] = ...) -> None: ...

class ParticipantJoined(_message.Message):
    __slots__ = ("participant", "node_id")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    participant: str
    node_id: int
    def __init__(self, participant: _Optional[str] = ..., node_id: _Optional[int] = ...) -> None: ...

class ParticipantDropped(_message.Message):
    __slots__ = ("participant", "round", "reason")
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    participant: str
    round: int
    reason: DropReason
    def __init__(self, participant: _Optional[str] = ..., round: _Optional[int] = ..., reason: _Optional[_Union[DropReason, str]] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("state", "end_reason", "privacy", "model")
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    state: RunState
    end_reason: RunEndReason
    privacy: PrivacySpent
    model: StoredModel
    def __init__(self, state: _Optional[_Union[RunState, str]] = ..., end_reason: _Optional[_Union[RunEndReason, str]] = ..., privacy: _Optional[_Union[PrivacySpent, _Mapping]] = ..., model: _Optional[_Union[StoredModel, _Mapping]] = ...) -> None: ...

class RunFailed(_message.Message):
    __slots__ = ("end_reason", "message")
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    end_reason: RunEndReason
    message: str
    def __init__(self, end_reason: _Optional[_Union[RunEndReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("sequence", "time", "run", "round_started", "round_finished", "participant_joined", "participant_dropped", "run_finished", "run_failed")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ROUND_STARTED_FIELD_NUMBER: _ClassVar[int]
    ROUND_FINISHED_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_JOINED_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_DROPPED_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    RUN_FAILED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    run: str
    round_started: RoundStarted
    round_finished: RoundFinished
    participant_joined: ParticipantJoined
    participant_dropped: ParticipantDropped
    run_finished: RunFinished
    run_failed: RunFailed
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run: _Optional[str] = ..., round_started: _Optional[_Union[RoundStarted, _Mapping]] = ..., round_finished: _Optional[_Union[RoundFinished, _Mapping]] = ..., participant_joined: _Optional[_Union[ParticipantJoined, _Mapping]] = ..., participant_dropped: _Optional[_Union[ParticipantDropped, _Mapping]] = ..., run_finished: _Optional[_Union[RunFinished, _Mapping]] = ..., run_failed: _Optional[_Union[RunFailed, _Mapping]] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "shape", "dtype", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("name", "representation", "spec", "round", "size_bytes", "sha256", "encryption", "tensors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    representation: ModelRepresentation
    spec: ModelSpec
    round: int
    size_bytes: int
    sha256: str
    encryption: EncryptionInfo
    tensors: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    def __init__(self, name: _Optional[str] = ..., representation: _Optional[_Union[ModelRepresentation, str]] = ..., spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., round: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., encryption: _Optional[_Union[EncryptionInfo, _Mapping]] = ..., tensors: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ...) -> None: ...

class ModelChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class CreateFederationRequest(_message.Message):
    __slots__ = ("federation_id", "federation", "request_id")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    federation_id: str
    federation: Federation
    request_id: str
    def __init__(self, federation_id: _Optional[str] = ..., federation: _Optional[_Union[Federation, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateFederationResponse(_message.Message):
    __slots__ = ("federation",)
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    federation: Federation
    def __init__(self, federation: _Optional[_Union[Federation, _Mapping]] = ...) -> None: ...

class GetFederationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFederationResponse(_message.Message):
    __slots__ = ("federation",)
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    federation: Federation
    def __init__(self, federation: _Optional[_Union[Federation, _Mapping]] = ...) -> None: ...

class ListFederationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFederationsResponse(_message.Message):
    __slots__ = ("federations", "next_page_token")
    FEDERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    federations: _containers.RepeatedCompositeFieldContainer[Federation]
    next_page_token: str
    def __init__(self, federations: _Optional[_Iterable[_Union[Federation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RegisterParticipantRequest(_message.Message):
    __slots__ = ("parent", "participant_id", "display_name", "public_key", "public_key_format", "curve", "attestation_document", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CURVE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    participant_id: str
    display_name: str
    public_key: bytes
    public_key_format: PublicKeyFormat
    curve: EcCurve
    attestation_document: bytes
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., participant_id: _Optional[str] = ..., display_name: _Optional[str] = ..., public_key: _Optional[bytes] = ..., public_key_format: _Optional[_Union[PublicKeyFormat, str]] = ..., curve: _Optional[_Union[EcCurve, str]] = ..., attestation_document: _Optional[bytes] = ..., request_id: _Optional[str] = ...) -> None: ...

class RegisterParticipantResponse(_message.Message):
    __slots__ = ("participant",)
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    participant: Participant
    def __init__(self, participant: _Optional[_Union[Participant, _Mapping]] = ...) -> None: ...

class ListParticipantsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListParticipantsResponse(_message.Message):
    __slots__ = ("participants", "next_page_token")
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedCompositeFieldContainer[Participant]
    next_page_token: str
    def __init__(self, participants: _Optional[_Iterable[_Union[Participant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RemoveParticipantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveParticipantResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStartupKitRequest(_message.Message):
    __slots__ = ("name", "certificate_signing_request", "csr_signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_SIGNING_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CSR_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    certificate_signing_request: bytes
    csr_signature: bytes
    def __init__(self, name: _Optional[str] = ..., certificate_signing_request: _Optional[bytes] = ..., csr_signature: _Optional[bytes] = ...) -> None: ...

class GetStartupKitResponse(_message.Message):
    __slots__ = ("startup_kit", "sha256", "site")
    STARTUP_KIT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    startup_kit: bytes
    sha256: str
    site: str
    def __init__(self, startup_kit: _Optional[bytes] = ..., sha256: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...

class ReportSiteAuditRequest(_message.Message):
    __slots__ = ("name", "from_byte", "events", "signature")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_BYTE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_byte: int
    events: bytes
    signature: bytes
    def __init__(self, name: _Optional[str] = ..., from_byte: _Optional[int] = ..., events: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ReportSiteAuditResponse(_message.Message):
    __slots__ = ("next_byte",)
    NEXT_BYTE_FIELD_NUMBER: _ClassVar[int]
    next_byte: int
    def __init__(self, next_byte: _Optional[int] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("parent", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("name", "view")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    name: str
    view: RunView
    def __init__(self, name: _Optional[str] = ..., view: _Optional[_Union[RunView, str]] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "state", "view")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    state: RunState
    view: RunView
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., view: _Optional[_Union[RunView, str]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RunEvent
    def __init__(self, event: _Optional[_Union[RunEvent, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "representation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    representation: ModelRepresentation
    def __init__(self, name: _Optional[str] = ..., representation: _Optional[_Union[ModelRepresentation, str]] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    chunk: ModelChunk
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., chunk: _Optional[_Union[ModelChunk, _Mapping]] = ...) -> None: ...
