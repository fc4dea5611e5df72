"""The token vault behind the Lambda entry points: the service's own servicer, vault, field service, keyring and
authorization policy, over DynamoDB and KMS, admitting each call as the mesh's interceptor does (the caller's
principal against the policy, the request's resources, then the field's detokenize policy in the vault), and
auditing every disclosure and refusal to token-vault's evidence chain.

The audit chain lives in the mesh's audit database (PostgreSQL): the functions append to token-vault's own
chain, signed with its audit key, so `privmesh evidence export` collects their entries through the service's
AuditLog API with everything else, and a refusal that cannot be audited is still refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format
from google.protobuf.message import Message

from privmesh.keybroker.backends.aws_kms import AwsKmsBackend
from privmesh.runtime.access import declaration
from privmesh.runtime.audit.checkpoint import log_origin
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.authz import Authorizer
from privmesh.runtime.context import current_method, current_principal, refusal_audited
from privmesh.runtime.db import Database
from privmesh.runtime.errors import Internal, InvalidArgument, NotFound, PermissionDenied, ServiceError
from privmesh.runtime.requests import check_request
from privmesh.serverless.kms import KmsKeySource
from privmesh.serverless.settings import EntrySettings, ServerlessSettings
from privmesh.tokenvault.dynamo import DynamoStore
from privmesh.tokenvault.field_service import FieldService
from privmesh.tokenvault.keyring import Keyring
from privmesh.tokenvault.keys import Limits
from privmesh.tokenvault.servicer import TokenVaultServicer
from privmesh.tokenvault.v1 import tokenvault_pb2 as pb
from privmesh.tokenvault.vault import Vault

SERVICE = "privmesh.tokenvault.v1.TokenVault"
DOMAIN = "tokenvault.privmesh.dev"
#: The methods the functions serve, with their request messages (rotations and field updates stay in the mesh).
METHODS: dict[str, type[Message]] = {
    "Tokenize": pb.TokenizeRequest, "Detokenize": pb.DetokenizeRequest, "DeleteTokens": pb.DeleteTokensRequest,
    "ForgetSubject": pb.ForgetSubjectRequest, "CreateField": pb.CreateFieldRequest, "GetField": pb.GetFieldRequest,
}
log = logging.getLogger("privmesh.serverless")
T = TypeVar("T")


def _signing_key(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("PRIVMESH_AUDIT_SIGNING_KEY is not an Ed25519 private key")
    return key


def audit_log(settings: EntrySettings, service: str) -> AuditLog:
    """The service's own audit chain in the mesh's audit database, signed with the service's audit key."""
    key = _signing_key(settings.audit_signing_key)
    chain = AuditStore(Database(settings.audit_database), service, key, settings.audit_checkpoint_every,
                       log_origin(settings.trust_domain, service))
    return AuditLog(chain, key.public_key())


class ServerlessVault:
    """Built once per cold start; serves every warm invocation after it (keys cached within their limits)."""

    def __init__(self, settings: ServerlessSettings) -> None:
        self.settings = settings
        self.store = DynamoStore(settings.table, settings.region, settings.dynamodb_endpoint, settings.timeout_seconds)
        limits = Limits(settings.cache_max_age_seconds, settings.cache_max_messages) \
            if settings.cache_max_age_seconds > 0 else Limits()
        source = KmsKeySource(AwsKmsBackend(settings.region, settings.kms_endpoint, settings.timeout_seconds), limits)
        self.keyring = Keyring(source, self.store)
        self.audit = audit_log(settings, "token-vault")
        self.authorizer = Authorizer.from_file(Path(settings.authz_policy))
        self.vault = Vault(self.store, self.keyring, self.audit, settings.max_batch_items)
        self.servicer = TokenVaultServicer(self.vault, FieldService(self.store, self.keyring, self.audit), None,
                                           self.authorizer)

    async def call(self, principal: str | None, method_name: str, request: Message | bytes | str) -> Message:
        """Serves one call as `principal` (None: no verifiable caller); ServiceError on any refusal or failure.
        `request` is the message, or its protobuf JSON (parsed strictly, never echoed back)."""
        message_type = METHODS.get(method_name)
        if message_type is None:
            raise NotFound("METHOD_NOT_FOUND", f"no method {method_name} here")

        async def serve(method: str) -> Message:
            parsed = request if isinstance(request, Message) else parse_request(message_type, request)
            check_request(parsed)
            self.authorizer.authorize_request(parsed)
            # The servicer reads nothing from its gRPC context: the serverless call passes none.
            handler = getattr(self.servicer, method_name)
            reply = cast(Message, await handler(parsed, cast("grpc.aio.ServicerContext[Any, Any]", None)))
            self.authorizer.authorize_reply(reply)
            return reply

        return await admitted(self.audit, self.authorizer, principal, f"{SERVICE}/{method_name}", serve)


async def admitted(audit: AuditLog, authorizer: Authorizer, principal: str | None, method: str,
                   serve: Callable[[str], Awaitable[T]]) -> T:
    """What the mesh's interceptor does around a call, for a function: the caller's principal in the call context,
    refused (and audited) unless known and allowed the method, the method's resource declaration in force while
    `serve` runs, and any unexpected failure answered as INTERNAL without details (its type alone is logged)."""
    tokens = (current_principal.set(principal or ""), current_method.set(method), refusal_audited.set(False))
    try:
        if principal is None:
            raise PermissionDenied("UNKNOWN_CALLER", "the caller has no IAM identity this function can map")
        if not authorizer.allows_method(principal, method):
            raise PermissionDenied("PERMISSION_DENIED_BY_POLICY", f"{principal} may not call {method}")
        call = authorizer.begin(declaration(method))
        try:
            return await serve(method)
        finally:
            authorizer.end(call)
    except ServiceError as error:
        if error.code == grpc.StatusCode.PERMISSION_DENIED and not refusal_audited.get():
            try:
                await audit.append(method.rpartition("/")[2], outcome="DENIED", principal=principal or "",
                                   details={"reason": error.reason, "method": method})
            except ServiceError:
                log.error("a refusal of %s could not be audited", method)
        raise
    except Exception as exc:  # never a stack trace to the caller; the type alone to the log
        log.error("unexpected %s in %s", type(exc).__name__, method)
        raise Internal("INTERNAL", "internal error") from None
    finally:
        current_principal.reset(tokens[0])
        current_method.reset(tokens[1])
        refusal_audited.reset(tokens[2])


def parse_request(message_type: type[Message], raw: bytes | str) -> Message:
    message = message_type()
    try:
        json_format.Parse(raw, message)
    except (json_format.ParseError, ValueError, RecursionError):
        raise InvalidArgument.single("body", f"not a {message_type.DESCRIPTOR.name} in protobuf JSON",
                                     "BODY_INVALID") from None
    return message


def reply_json(reply: Message) -> dict[str, Any]:
    return json_format.MessageToDict(reply)


_LOOP: asyncio.AbstractEventLoop | None = None


def run(coroutine: Any) -> Any:
    """Runs a coroutine on the one event loop kept across warm invocations (its worker threads too)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coroutine)
