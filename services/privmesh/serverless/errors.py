"""The gRPC API's error model over HTTP: google.rpc.Status as JSON (ErrorInfo reason, BadRequest field
violations) with the HTTP status of its code, as Google's HTTP APIs map them (AIP-193). Never a stack trace."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format

from privmesh.runtime.errors import ServiceError, status_proto

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.UNIMPLEMENTED: 501,
}


def error_body(error: ServiceError, domain: str) -> dict[str, Any]:
    status = json_format.MessageToDict(status_proto(error, domain))
    return {"error": {"code": http_status(error), "status": error.code.name, "message": error.message,
                      "details": status.get("details", [])}}


def http_status(error: ServiceError) -> int:
    return HTTP_STATUS.get(error.code, 500)


def http_response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) response."""
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
