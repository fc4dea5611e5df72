import datetime

from google.protobuf import struct_pb2 as _struct_pb2
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
    ERROR_REASON_DATASET_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_DATASET_ALREADY_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_SOURCE_UNREADABLE: _ClassVar[ErrorReason]
    ERROR_REASON_SCHEMA_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_SCHEMA_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_COLUMN_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_COLUMN_TYPE_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_BOUNDS_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_CATEGORIES_MISSING: _ClassVar[ErrorReason]
    ERROR_REASON_PRIVACY_LOSS_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_DELTA_REQUIRED: _ClassVar[ErrorReason]
    ERROR_REASON_ACCURACY_UNREACHABLE: _ClassVar[ErrorReason]
    ERROR_REASON_SQL_SYNTAX_ERROR: _ClassVar[ErrorReason]
    ERROR_REASON_SQL_UNSUPPORTED: _ClassVar[ErrorReason]
    ERROR_REASON_QUERY_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_RESULT_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_BUDGET_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_BUDGET_INVALID: _ClassVar[ErrorReason]
    ERROR_REASON_ETAG_MISMATCH: _ClassVar[ErrorReason]
    ERROR_REASON_REQUEST_ID_CONFLICT: _ClassVar[ErrorReason]
    ERROR_REASON_SOURCE_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_RELEASE_FAILED: _ClassVar[ErrorReason]

class PrivacyAccounting(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVACY_ACCOUNTING_UNSPECIFIED: _ClassVar[PrivacyAccounting]
    PRIVACY_ACCOUNTING_PURE_DP: _ClassVar[PrivacyAccounting]
    PRIVACY_ACCOUNTING_APPROXIMATE_DP: _ClassVar[PrivacyAccounting]
    PRIVACY_ACCOUNTING_ZCDP: _ClassVar[PrivacyAccounting]

class DataFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_FORMAT_UNSPECIFIED: _ClassVar[DataFormat]
    DATA_FORMAT_CSV: _ClassVar[DataFormat]
    DATA_FORMAT_PARQUET: _ClassVar[DataFormat]

class ColumnType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_TYPE_UNSPECIFIED: _ClassVar[ColumnType]
    COLUMN_TYPE_BOOL: _ClassVar[ColumnType]
    COLUMN_TYPE_INT64: _ClassVar[ColumnType]
    COLUMN_TYPE_FLOAT64: _ClassVar[ColumnType]
    COLUMN_TYPE_STRING: _ClassVar[ColumnType]
    COLUMN_TYPE_DATE: _ClassVar[ColumnType]

class AggregateFunction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_FUNCTION_UNSPECIFIED: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_COUNT: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_SUM: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_MEAN: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_VARIANCE: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_HISTOGRAM: _ClassVar[AggregateFunction]
    AGGREGATE_FUNCTION_QUANTILE: _ClassVar[AggregateFunction]

class FilterOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILTER_OPERATOR_UNSPECIFIED: _ClassVar[FilterOperator]
    FILTER_OPERATOR_EQUAL: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NOT_EQUAL: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LESS: _ClassVar[FilterOperator]
    FILTER_OPERATOR_LESS_OR_EQUAL: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GREATER: _ClassVar[FilterOperator]
    FILTER_OPERATOR_GREATER_OR_EQUAL: _ClassVar[FilterOperator]
    FILTER_OPERATOR_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_NOT_IN: _ClassVar[FilterOperator]
    FILTER_OPERATOR_IS_NULL: _ClassVar[FilterOperator]
    FILTER_OPERATOR_IS_NOT_NULL: _ClassVar[FilterOperator]

class GroupKeysMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_KEYS_MODE_UNSPECIFIED: _ClassVar[GroupKeysMode]
    GROUP_KEYS_MODE_DECLARED: _ClassVar[GroupKeysMode]
    GROUP_KEYS_MODE_PUBLIC: _ClassVar[GroupKeysMode]
    GROUP_KEYS_MODE_PRIVATE: _ClassVar[GroupKeysMode]

class Mechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MECHANISM_UNSPECIFIED: _ClassVar[Mechanism]
    MECHANISM_LAPLACE: _ClassVar[Mechanism]
    MECHANISM_GAUSSIAN: _ClassVar[Mechanism]
    MECHANISM_REPORT_NOISY_MAX: _ClassVar[Mechanism]
    MECHANISM_POST_PROCESSING: _ClassVar[Mechanism]
    MECHANISM_EXPONENTIAL: _ClassVar[Mechanism]

class LedgerEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_ENTRY_KIND_UNSPECIFIED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_SPEND: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_CAP_SET: _ClassVar[LedgerEntryKind]

class SpendState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEND_STATE_UNSPECIFIED: _ClassVar[SpendState]
    SPEND_STATE_RESERVED: _ClassVar[SpendState]
    SPEND_STATE_COMMITTED: _ClassVar[SpendState]
    SPEND_STATE_REFUNDED: _ClassVar[SpendState]

class DatasetEngine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_ENGINE_UNSPECIFIED: _ClassVar[DatasetEngine]
    DATASET_ENGINE_POLARS: _ClassVar[DatasetEngine]
    DATASET_ENGINE_SPARK: _ClassVar[DatasetEngine]
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_DATASET_NOT_FOUND: ErrorReason
ERROR_REASON_DATASET_ALREADY_EXISTS: ErrorReason
ERROR_REASON_SOURCE_UNREADABLE: ErrorReason
ERROR_REASON_SCHEMA_INVALID: ErrorReason
ERROR_REASON_SCHEMA_MISMATCH: ErrorReason
ERROR_REASON_COLUMN_NOT_FOUND: ErrorReason
ERROR_REASON_COLUMN_TYPE_MISMATCH: ErrorReason
ERROR_REASON_BOUNDS_MISSING: ErrorReason
ERROR_REASON_CATEGORIES_MISSING: ErrorReason
ERROR_REASON_PRIVACY_LOSS_INVALID: ErrorReason
ERROR_REASON_DELTA_REQUIRED: ErrorReason
ERROR_REASON_ACCURACY_UNREACHABLE: ErrorReason
ERROR_REASON_SQL_SYNTAX_ERROR: ErrorReason
ERROR_REASON_SQL_UNSUPPORTED: ErrorReason
ERROR_REASON_QUERY_INVALID: ErrorReason
ERROR_REASON_RESULT_TOO_LARGE: ErrorReason
ERROR_REASON_BUDGET_EXCEEDED: ErrorReason
ERROR_REASON_BUDGET_INVALID: ErrorReason
ERROR_REASON_ETAG_MISMATCH: ErrorReason
ERROR_REASON_REQUEST_ID_CONFLICT: ErrorReason
ERROR_REASON_SOURCE_UNAVAILABLE: ErrorReason
ERROR_REASON_RELEASE_FAILED: ErrorReason
PRIVACY_ACCOUNTING_UNSPECIFIED: PrivacyAccounting
PRIVACY_ACCOUNTING_PURE_DP: PrivacyAccounting
PRIVACY_ACCOUNTING_APPROXIMATE_DP: PrivacyAccounting
PRIVACY_ACCOUNTING_ZCDP: PrivacyAccounting
DATA_FORMAT_UNSPECIFIED: DataFormat
DATA_FORMAT_CSV: DataFormat
DATA_FORMAT_PARQUET: DataFormat
COLUMN_TYPE_UNSPECIFIED: ColumnType
COLUMN_TYPE_BOOL: ColumnType
COLUMN_TYPE_INT64: ColumnType
COLUMN_TYPE_FLOAT64: ColumnType
COLUMN_TYPE_STRING: ColumnType
COLUMN_TYPE_DATE: ColumnType
AGGREGATE_FUNCTION_UNSPECIFIED: AggregateFunction
AGGREGATE_FUNCTION_COUNT: AggregateFunction
AGGREGATE_FUNCTION_SUM: AggregateFunction
AGGREGATE_FUNCTION_MEAN: AggregateFunction
AGGREGATE_FUNCTION_VARIANCE: AggregateFunction
AGGREGATE_FUNCTION_HISTOGRAM: AggregateFunction
AGGREGATE_FUNCTION_QUANTILE: AggregateFunction
FILTER_OPERATOR_UNSPECIFIED: FilterOperator
FILTER_OPERATOR_EQUAL: FilterOperator
FILTER_OPERATOR_NOT_EQUAL: FilterOperator
FILTER_OPERATOR_LESS: FilterOperator
FILTER_OPERATOR_LESS_OR_EQUAL: FilterOperator
FILTER_OPERATOR_GREATER: FilterOperator
FILTER_OPERATOR_GREATER_OR_EQUAL: FilterOperator
FILTER_OPERATOR_IN: FilterOperator
FILTER_OPERATOR_NOT_IN: FilterOperator
FILTER_OPERATOR_IS_NULL: FilterOperator
FILTER_OPERATOR_IS_NOT_NULL: FilterOperator
GROUP_KEYS_MODE_UNSPECIFIED: GroupKeysMode
GROUP_KEYS_MODE_DECLARED: GroupKeysMode
GROUP_KEYS_MODE_PUBLIC: GroupKeysMode
GROUP_KEYS_MODE_PRIVATE: GroupKeysMode
MECHANISM_UNSPECIFIED: Mechanism
MECHANISM_LAPLACE: Mechanism
MECHANISM_GAUSSIAN: Mechanism
MECHANISM_REPORT_NOISY_MAX: Mechanism
MECHANISM_POST_PROCESSING: Mechanism
MECHANISM_EXPONENTIAL: Mechanism
LEDGER_ENTRY_KIND_UNSPECIFIED: LedgerEntryKind
LEDGER_ENTRY_KIND_SPEND: LedgerEntryKind
LEDGER_ENTRY_KIND_CAP_SET: LedgerEntryKind
SPEND_STATE_UNSPECIFIED: SpendState
SPEND_STATE_RESERVED: SpendState
SPEND_STATE_COMMITTED: SpendState
SPEND_STATE_REFUNDED: SpendState
DATASET_ENGINE_UNSPECIFIED: DatasetEngine
DATASET_ENGINE_POLARS: DatasetEngine
DATASET_ENGINE_SPARK: DatasetEngine

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "int_value", "float_value", "string_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: _struct_pb2.NullValue
    bool_value: bool
    int_value: int
    float_value: float
    string_value: str
    def __init__(self, null_value: _Optional[_Union[_struct_pb2.NullValue, str]] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., string_value: _Optional[str] = ...) -> None: ...

class Bounds(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class ColumnSchema(_message.Message):
    __slots__ = ("name", "type", "nullable", "bounds", "categories", "fill_value", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    FILL_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ColumnType
    nullable: bool
    bounds: Bounds
    categories: _containers.RepeatedCompositeFieldContainer[Value]
    fill_value: Value
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ColumnType, str]] = ..., nullable: _Optional[bool] = ..., bounds: _Optional[_Union[Bounds, _Mapping]] = ..., categories: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., fill_value: _Optional[_Union[Value, _Mapping]] = ..., description: _Optional[str] = ...) -> None: ...

class CsvOptions(_message.Message):
    __slots__ = ("delimiter", "headerless")
    DELIMITER_FIELD_NUMBER: _ClassVar[int]
    HEADERLESS_FIELD_NUMBER: _ClassVar[int]
    delimiter: str
    headerless: bool
    def __init__(self, delimiter: _Optional[str] = ..., headerless: _Optional[bool] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("uri", "format", "csv")
    URI_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    uri: str
    format: DataFormat
    csv: CsvOptions
    def __init__(self, uri: _Optional[str] = ..., format: _Optional[_Union[DataFormat, str]] = ..., csv: _Optional[_Union[CsvOptions, _Mapping]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "description", "source", "columns", "privacy_unit_column", "max_contributions_per_unit", "max_groups_per_unit", "accounting", "uid", "create_time", "etag", "max_rows", "engine")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_UNIT_COLUMN_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTRIBUTIONS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    MAX_GROUPS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    source: DataSource
    columns: _containers.RepeatedCompositeFieldContainer[ColumnSchema]
    privacy_unit_column: str
    max_contributions_per_unit: int
    max_groups_per_unit: int
    accounting: PrivacyAccounting
    uid: str
    create_time: _timestamp_pb2.Timestamp
    etag: str
    max_rows: int
    engine: DatasetEngine
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., source: _Optional[_Union[DataSource, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[ColumnSchema, _Mapping]]] = ..., privacy_unit_column: _Optional[str] = ..., max_contributions_per_unit: _Optional[int] = ..., max_groups_per_unit: _Optional[int] = ..., accounting: _Optional[_Union[PrivacyAccounting, str]] = ..., uid: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., max_rows: _Optional[int] = ..., engine: _Optional[_Union[DatasetEngine, str]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("column", "operator", "values")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    column: str
    operator: FilterOperator
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, column: _Optional[str] = ..., operator: _Optional[_Union[FilterOperator, str]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class GroupKey(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class GroupKeys(_message.Message):
    __slots__ = ("mode", "keys")
    MODE_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    mode: GroupKeysMode
    keys: _containers.RepeatedCompositeFieldContainer[GroupKey]
    def __init__(self, mode: _Optional[_Union[GroupKeysMode, str]] = ..., keys: _Optional[_Iterable[_Union[GroupKey, _Mapping]]] = ...) -> None: ...

class Aggregate(_message.Message):
    __slots__ = ("alias", "function", "column", "quantiles", "candidates", "weight")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    alias: str
    function: AggregateFunction
    column: str
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    candidates: _containers.RepeatedScalarFieldContainer[float]
    weight: float
    def __init__(self, alias: _Optional[str] = ..., function: _Optional[_Union[AggregateFunction, str]] = ..., column: _Optional[str] = ..., quantiles: _Optional[_Iterable[float]] = ..., candidates: _Optional[_Iterable[float]] = ..., weight: _Optional[float] = ...) -> None: ...

class StructuredQuery(_message.Message):
    __slots__ = ("dataset", "filters", "group_by", "group_keys", "aggregates")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEYS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATES_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    group_by: _containers.RepeatedScalarFieldContainer[str]
    group_keys: GroupKeys
    aggregates: _containers.RepeatedCompositeFieldContainer[Aggregate]
    def __init__(self, dataset: _Optional[str] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., group_by: _Optional[_Iterable[str]] = ..., group_keys: _Optional[_Union[GroupKeys, _Mapping]] = ..., aggregates: _Optional[_Iterable[_Union[Aggregate, _Mapping]]] = ...) -> None: ...

class PrivacyLoss(_message.Message):
    __slots__ = ("epsilon", "delta", "rho")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RHO_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    rho: float
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., rho: _Optional[float] = ...) -> None: ...

class PrivacySpec(_message.Message):
    __slots__ = ("privacy_loss", "target_accuracy", "delta", "alpha")
    PRIVACY_LOSS_FIELD_NUMBER: _ClassVar[int]
    TARGET_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    privacy_loss: PrivacyLoss
    target_accuracy: float
    delta: float
    alpha: float
    def __init__(self, privacy_loss: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., target_accuracy: _Optional[float] = ..., delta: _Optional[float] = ..., alpha: _Optional[float] = ...) -> None: ...

class ConfidenceInterval(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class NoisyComponent(_message.Message):
    __slots__ = ("name", "value", "mechanism", "noise_scale", "accuracy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    mechanism: Mechanism
    noise_scale: float
    accuracy: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., mechanism: _Optional[_Union[Mechanism, str]] = ..., noise_scale: _Optional[float] = ..., accuracy: _Optional[float] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("aggregate", "bin", "value", "mechanism", "noise_scale", "accuracy", "confidence_interval", "components")
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    BIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    aggregate: str
    bin: str
    value: float
    mechanism: Mechanism
    noise_scale: float
    accuracy: float
    confidence_interval: ConfidenceInterval
    components: _containers.RepeatedCompositeFieldContainer[NoisyComponent]
    def __init__(self, aggregate: _Optional[str] = ..., bin: _Optional[str] = ..., value: _Optional[float] = ..., mechanism: _Optional[_Union[Mechanism, str]] = ..., noise_scale: _Optional[float] = ..., accuracy: _Optional[float] = ..., confidence_interval: _Optional[_Union[ConfidenceInterval, _Mapping]] = ..., components: _Optional[_Iterable[_Union[NoisyComponent, _Mapping]]] = ...) -> None: ...

class ResultRow(_message.Message):
    __slots__ = ("group_key", "estimates")
    GROUP_KEY_FIELD_NUMBER: _ClassVar[int]
    ESTIMATES_FIELD_NUMBER: _ClassVar[int]
    group_key: _containers.RepeatedCompositeFieldContainer[Value]
    estimates: _containers.RepeatedCompositeFieldContainer[Estimate]
    def __init__(self, group_key: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., estimates: _Optional[_Iterable[_Union[Estimate, _Mapping]]] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("release_id", "dataset", "plan", "query_digest", "rows", "accounting", "privacy_loss", "charged", "remaining", "alpha", "partition_threshold", "cached", "release_time", "truncated")
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    QUERY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_LOSS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    PARTITION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    release_id: str
    dataset: str
    plan: StructuredQuery
    query_digest: str
    rows: _containers.RepeatedCompositeFieldContainer[ResultRow]
    accounting: PrivacyAccounting
    privacy_loss: PrivacyLoss
    charged: PrivacyLoss
    remaining: PrivacyLoss
    alpha: float
    partition_threshold: float
    cached: bool
    release_time: _timestamp_pb2.Timestamp
    truncated: bool
    def __init__(self, release_id: _Optional[str] = ..., dataset: _Optional[str] = ..., plan: _Optional[_Union[StructuredQuery, _Mapping]] = ..., query_digest: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[ResultRow, _Mapping]]] = ..., accounting: _Optional[_Union[PrivacyAccounting, str]] = ..., privacy_loss: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., charged: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., remaining: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., alpha: _Optional[float] = ..., partition_threshold: _Optional[float] = ..., cached: _Optional[bool] = ..., release_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class RegisterDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "dataset", "request_id")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    dataset: Dataset
    request_id: str
    def __init__(self, dataset_id: _Optional[str] = ..., dataset: _Optional[_Union[Dataset, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RegisterDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("query", "privacy", "force_new_release", "validate_only", "request_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    FORCE_NEW_RELEASE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    query: StructuredQuery
    privacy: PrivacySpec
    force_new_release: bool
    validate_only: bool
    request_id: str
    def __init__(self, query: _Optional[_Union[StructuredQuery, _Mapping]] = ..., privacy: _Optional[_Union[PrivacySpec, _Mapping]] = ..., force_new_release: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: Release
    def __init__(self, release: _Optional[_Union[Release, _Mapping]] = ...) -> None: ...

class QuerySqlRequest(_message.Message):
    __slots__ = ("sql", "group_keys", "privacy", "force_new_release", "validate_only", "request_id")
    SQL_FIELD_NUMBER: _ClassVar[int]
    GROUP_KEYS_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    FORCE_NEW_RELEASE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    sql: str
    group_keys: GroupKeys
    privacy: PrivacySpec
    force_new_release: bool
    validate_only: bool
    request_id: str
    def __init__(self, sql: _Optional[str] = ..., group_keys: _Optional[_Union[GroupKeys, _Mapping]] = ..., privacy: _Optional[_Union[PrivacySpec, _Mapping]] = ..., force_new_release: _Optional[bool] = ..., validate_only: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class QuerySqlResponse(_message.Message):
    __slots__ = ("release",)
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    release: Release
    def __init__(self, release: _Optional[_Union[Release, _Mapping]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("dataset", "analyst", "accounting", "cap", "spent", "reserved", "remaining", "update_time", "etag")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    analyst: str
    accounting: PrivacyAccounting
    cap: PrivacyLoss
    spent: PrivacyLoss
    reserved: PrivacyLoss
    remaining: PrivacyLoss
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, dataset: _Optional[str] = ..., analyst: _Optional[str] = ..., accounting: _Optional[_Union[PrivacyAccounting, str]] = ..., cap: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., spent: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., reserved: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., remaining: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("dataset", "analyst", "cap", "etag")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    analyst: str
    cap: PrivacyLoss
    etag: str
    def __init__(self, dataset: _Optional[str] = ..., analyst: _Optional[str] = ..., cap: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("budget",)
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("dataset", "analyst")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    analyst: str
    def __init__(self, dataset: _Optional[str] = ..., analyst: _Optional[str] = ...) -> None: ...

class GetBudgetResponse(_message.Message):
    __slots__ = ("budget", "dataset_budget")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    DATASET_BUDGET_FIELD_NUMBER: _ClassVar[int]
    budget: Budget
    dataset_budget: Budget
    def __init__(self, budget: _Optional[_Union[Budget, _Mapping]] = ..., dataset_budget: _Optional[_Union[Budget, _Mapping]] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("sequence", "time", "kind", "dataset", "analyst", "principal", "state", "query_digest", "release_id", "reserved", "charged", "cached", "cap", "remaining", "update_time")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUERY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RELEASE_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CAP_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    kind: LedgerEntryKind
    dataset: str
    analyst: str
    principal: str
    state: SpendState
    query_digest: str
    release_id: str
    reserved: PrivacyLoss
    charged: PrivacyLoss
    cached: bool
    cap: PrivacyLoss
    remaining: PrivacyLoss
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[LedgerEntryKind, str]] = ..., dataset: _Optional[str] = ..., analyst: _Optional[str] = ..., principal: _Optional[str] = ..., state: _Optional[_Union[SpendState, str]] = ..., query_digest: _Optional[str] = ..., release_id: _Optional[str] = ..., reserved: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., charged: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., cached: _Optional[bool] = ..., cap: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., remaining: _Optional[_Union[PrivacyLoss, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLedgerRequest(_message.Message):
    __slots__ = ("dataset", "analyst", "page_size", "page_token")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ANALYST_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    analyst: str
    page_size: int
    page_token: str
    def __init__(self, dataset: _Optional[str] = ..., analyst: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLedgerResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
