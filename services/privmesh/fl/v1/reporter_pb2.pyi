from privmesh.common.v1 import common_pb2 as _common_pb2
from privmesh.fl.v1 import fl_pb2 as _fl_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportedRoundStart(_message.Message):
    __slots__ = ("round", "selected_node_ids")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SELECTED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    selected_node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, round: _Optional[int] = ..., selected_node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportedRoundEnd(_message.Message):
    __slots__ = ("metrics", "completed_node_ids", "dropped_node_ids")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    metrics: _fl_pb2.RoundMetrics
    completed_node_ids: _containers.RepeatedScalarFieldContainer[int]
    dropped_node_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, metrics: _Optional[_Union[_fl_pb2.RoundMetrics, _Mapping]] = ..., completed_node_ids: _Optional[_Iterable[int]] = ..., dropped_node_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportedRunEnd(_message.Message):
    __slots__ = ("end_reason", "message")
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    end_reason: _fl_pb2.RunEndReason
    message: str
    def __init__(self, end_reason: _Optional[_Union[_fl_pb2.RunEndReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class ReportRunRequest(_message.Message):
    __slots__ = ("run", "round_start", "round_end", "run_end")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ROUND_START_FIELD_NUMBER: _ClassVar[int]
    ROUND_END_FIELD_NUMBER: _ClassVar[int]
    RUN_END_FIELD_NUMBER: _ClassVar[int]
    run: str
    round_start: ReportedRoundStart
    round_end: ReportedRoundEnd
    run_end: ReportedRunEnd
    def __init__(self, run: _Optional[str] = ..., round_start: _Optional[_Union[ReportedRoundStart, _Mapping]] = ..., round_end: _Optional[_Union[ReportedRoundEnd, _Mapping]] = ..., run_end: _Optional[_Union[ReportedRunEnd, _Mapping]] = ...) -> None: ...

class ReportRunResponse(_message.Message):
    __slots__ = ("stop_requested",)
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    stop_requested: bool
    def __init__(self, stop_requested: _Optional[bool] = ...) -> None: ...

class UploadedModelHeader(_message.Message):
    __slots__ = ("run", "round", "tensors", "size_bytes")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    run: str
    round: int
    tensors: _containers.RepeatedCompositeFieldContainer[_fl_pb2.TensorInfo]
    size_bytes: int
    def __init__(self, run: _Optional[str] = ..., round: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[_fl_pb2.TensorInfo, _Mapping]]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadedModelHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadedModelHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _fl_pb2.StoredModel
    def __init__(self, model: _Optional[_Union[_fl_pb2.StoredModel, _Mapping]] = ...) -> None: ...
