"""Domain errors and their translation to google.rpc.Status.

Domain code raises these (it has no gRPC in it); the server interceptor turns them into a canonical status
with ErrorInfo (reason, domain) and, for INVALID_ARGUMENT, BadRequest field violations, so clients in any
language read the same details. Messages must never carry plaintexts, keys or tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request (e.g. "policy.allowed_pcr_sets[0].pcrs[4]") and why;
    optionally a machine-readable reason (BadRequest.FieldViolation.reason)."""

    field: str
    description: str
    reason: str = ""


class ServiceError(Exception):
    """An error the caller should see; each subclass fixes the canonical code."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None,
                 violations: Iterable[FieldViolation] = (), extra_details: Iterable[Message] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.extra_details = tuple(extra_details)  # further google.rpc details: RetryInfo, QuotaFailure...

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], reason: str = "INVALID_FIELD",
                 message: str | None = None) -> None:
        found = tuple(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in found) or "invalid request"
        super().__init__(reason, text, None, found)

    @classmethod
    def single(cls, field_path: str, description: str, reason: str = "INVALID_FIELD") -> InvalidArgument:
        return cls([FieldViolation(field_path, description)], reason)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL


class Violations:
    """Collects field violations so a request reports every bad field at once, then raises."""

    def __init__(self) -> None:
        self._found: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        self._found.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> bool:
        if not ok:
            self.add(field_path, description)
        return ok

    def __bool__(self) -> bool:
        return bool(self._found)

    def raise_if_any(self, reason: str = "INVALID_FIELD") -> None:
        if self._found:
            raise InvalidArgument(self._found, reason)


def to_grpc_status(error: ServiceError, domain: str) -> grpc.Status:
    """Builds the rich status (ErrorInfo + BadRequest) sent in grpc-status-details-bin."""
    return rpc_status.to_status(status_proto(error, domain))


def status_proto(error: ServiceError, domain: str) -> status_pb2.Status:
    """The google.rpc.Status of an error: what gRPC sends in its trailers and HTTP entry points as JSON."""
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=dict(error.metadata))
    packed = any_pb2.Any()
    packed.Pack(info)
    details.append(packed)
    if error.violations:
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description, reason=v.reason)
            for v in error.violations
        ])
        packed_bad = any_pb2.Any()
        packed_bad.Pack(bad)
        details.append(packed_bad)
    for extra in error.extra_details:
        packed_extra = any_pb2.Any()
        packed_extra.Pack(extra)
        details.append(packed_extra)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client reads back from a failed call's rich status."""

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    metadata: dict[str, str]
    violations: tuple[FieldViolation, ...]
    retry_delay_seconds: float | None = None  # from RetryInfo
    quota_violations: tuple[str, ...] = ()  # QuotaFailure subjects


def read_error(error: grpc.RpcError | grpc.aio.AioRpcError) -> ErrorDetails:
    """Decodes ErrorInfo and BadRequest from a failed call (works for sync and aio errors)."""
    status = _status_from_trailers(error)
    code = error.code()
    reason = domain = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    quota: list[str] = []
    message = error.details() or ""
    if status is not None:
        message = status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                failure = error_details_pb2.QuotaFailure()
                detail.Unpack(failure)
                quota.extend(v.subject for v in failure.violations)
    return ErrorDetails(code, message, reason, domain, metadata, tuple(violations), retry_delay, tuple(quota))


def _status_from_trailers(error: grpc.RpcError | grpc.aio.AioRpcError) -> status_pb2.Status | None:
    # Both kinds yield (key, value) pairs at run time; types-grpcio's _Metadatum (sync) declares no __iter__.
    for key, value in error.trailing_metadata() or ():  # type: ignore[misc]
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code != code_pb2.OK:
                return status
    return None
