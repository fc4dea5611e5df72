"""The Lambda handlers (`privmesh.serverless.handler.<name>`): events in, the vault's replies or its error model
out. One vault per execution environment, built on the first (cold) invocation.

- `tokenvault`: API Gateway HTTP API (payload 2.0, IAM authorization), `POST /v1/{method}` with the method's
  request in protobuf JSON; or a direct invocation `{"method": ..., "request": {...}}` (Step Functions, SDK),
  whose caller is the configured direct principal, since Lambda does not say who invoked it.
- `s3_batch`: S3 object-created events (privmesh.serverless.s3batch).
- `fhe_score`: fhe-inference's synchronous scoring (privmesh.serverless.fhe), over HTTP or direct invocation
  (`{"request": {...}}`).
- `fhe_job`: fhe-inference's asynchronous jobs with inputs and results in S3 (privmesh.serverless.fhejobs): S3
  object-created events, `POST /v1/fhe/jobs/{action}` over HTTP, or `{"action": ..., ...}` directly.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from privmesh.runtime.errors import InvalidArgument, ServiceError
from privmesh.serverless.errors import error_body, http_response, http_status
from privmesh.serverless.fhe import ServerlessFhe
from privmesh.serverless.fhejobs import ServerlessJobs
from privmesh.serverless.identity import http_principal
from privmesh.serverless.s3batch import BatchFiles
from privmesh.serverless.settings import FheEntrySettings, FheJobSettings, ServerlessSettings
from privmesh.serverless.vault import DOMAIN, ServerlessVault, reply_json, run

FHE_DOMAIN = "fhe.privmesh.dev"

_VAULT: ServerlessVault | None = None
_FILES: BatchFiles | None = None
_FHE: ServerlessFhe | None = None
_JOBS: ServerlessJobs | None = None


def vault() -> ServerlessVault:
    global _VAULT
    if _VAULT is None:
        _VAULT = ServerlessVault(ServerlessSettings())  # fields from the environment
    return _VAULT


def tokenvault(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, Mapping) and event.get("version") == "2.0" and "requestContext" in event:
        return _http(event)
    return _direct(event)


def _http(event: Mapping[str, Any]) -> dict[str, Any]:
    served = vault()
    try:
        method = str(event.get("rawPath", "")).rsplit("/", 1)[-1]
        body = _body(event, served.settings.max_body_bytes)
        principal = http_principal(event, served.settings.trust_domain)
        reply = run(served.call(principal, method, body))
    except ServiceError as error:
        return http_response(http_status(error), error_body(error, DOMAIN))
    return http_response(200, reply_json(reply))


def _body(event: Mapping[str, Any], limit: int) -> str:
    """The request body, its size checked before it is decoded."""
    raw = event.get("body") or ""
    if not isinstance(raw, str) or len(raw) > limit * 4 // 3 + 4:
        raise InvalidArgument.single("body", f"at most {limit} bytes", "BODY_TOO_LARGE")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument.single("body", "not base64-encoded UTF-8", "BODY_INVALID") from None
    if len(raw.encode()) > limit:
        raise InvalidArgument.single("body", f"at most {limit} bytes", "BODY_TOO_LARGE")
    return raw


def _direct(event: Any) -> dict[str, Any]:
    served = vault()
    try:
        if not isinstance(event, Mapping) or not isinstance(event.get("method"), str) \
                or not isinstance(event.get("request"), Mapping):
            raise InvalidArgument.single("event", "must be {\"method\": ..., \"request\": {...}}", "EVENT_INVALID")
        body = json.dumps(event["request"])
        if len(body) > served.settings.max_body_bytes:
            raise InvalidArgument.single("request", f"at most {served.settings.max_body_bytes} bytes",
                                         "BODY_TOO_LARGE")
        principal = served.settings.direct_principal or None
        reply = run(served.call(principal, event["method"], body))
    except ServiceError as error:
        return {"statusCode": http_status(error), "body": error_body(error, DOMAIN)}
    return {"statusCode": 200, "body": reply_json(reply)}


def s3_batch(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    global _FILES
    if _FILES is None:
        _FILES = BatchFiles(vault())
    return _FILES.handle(event)


def fhe_score(event: Any, context: Any) -> dict[str, Any]:
    global _FHE
    if _FHE is None:
        _FHE = ServerlessFhe(FheEntrySettings())  # fields from the environment
    served = _FHE
    http = isinstance(event, Mapping) and event.get("version") == "2.0" and "requestContext" in event
    try:
        if http:
            body = _body(event, served.settings.max_body_bytes)
            principal = http_principal(event, served.settings.trust_domain)
        else:
            if not isinstance(event, Mapping) or not isinstance(event.get("request"), Mapping):
                raise InvalidArgument.single("event", "must be {\"request\": {...}}", "EVENT_INVALID")
            body = json.dumps(event["request"])
            if len(body) > served.settings.max_body_bytes:
                raise InvalidArgument.single("request", f"at most {served.settings.max_body_bytes} bytes",
                                             "BODY_TOO_LARGE")
            principal = served.settings.direct_principal or None
        reply = run(served.score(principal, body))
    except ServiceError as error:
        status, failure = http_status(error), error_body(error, FHE_DOMAIN)
        return http_response(status, failure) if http else {"statusCode": status, "body": failure}
    return http_response(200, reply) if http else {"statusCode": 200, "body": reply}


def fhe_job(event: Any, context: Any) -> dict[str, Any]:
    global _JOBS
    if _JOBS is None:
        _JOBS = ServerlessJobs(FheJobSettings())  # fields from the environment
    served = _JOBS
    if isinstance(event, Mapping) and "Records" in event:
        return served.handle_s3(event)
    http = isinstance(event, Mapping) and event.get("version") == "2.0" and "requestContext" in event
    try:
        if http:
            action = str(event.get("rawPath", "")).rsplit("/", 1)[-1]
            request = _json_object(_body(event, served.settings.max_body_bytes))
            principal = http_principal(event, served.settings.trust_domain)
        else:
            if not isinstance(event, Mapping) or not isinstance(event.get("action"), str):
                raise InvalidArgument.single("event", "must be {\"action\": ..., ...}", "EVENT_INVALID")
            action, request = str(event["action"]), {k: v for k, v in event.items() if k != "action"}
            principal = served.settings.direct_principal or None
        reply = run(served.call(principal, action, request))
    except ServiceError as error:
        status, failure = http_status(error), error_body(error, FHE_DOMAIN)
        return http_response(status, failure) if http else {"statusCode": status, "body": failure}
    return http_response(200, reply) if http else {"statusCode": 200, "body": reply}


def _json_object(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidArgument.single("body", "not JSON", "BODY_INVALID") from None
    if not isinstance(parsed, dict):
        raise InvalidArgument.single("body", "must be a JSON object", "BODY_INVALID")
    return parsed
