"""The one server interceptor: mTLS identity, deny-by-default authorization, error translation, metrics,
access logs and tracing, applied to every method of every service on the server. Every refusal (an
unauthenticated or foreign peer, a method or resource the policy denies) is audited with its reason, unless the
serving code audited it itself.

Authorization follows each method's declaration in its contract (runtime/access.py): the method, then every
resource the request names (for a client-streaming method, its first message) before the handler runs; after
it, a resource the handler had to resolve must have been checked, and reply items the caller may not see are
dropped. A method without a declaration is never wrapped: the server refuses to start.

Handlers are wrapped once, as they are registered (`InterceptedServer`), not through grpc.aio's interceptor
pipeline, which runs a chain of coroutines on every call to look the handler up again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.propagate import extract

from privmesh.runtime.access import Declaration, DeclarationError, declaration
from privmesh.runtime.audit.log import AuditLog
from privmesh.runtime.authz import ALWAYS_ALLOWED_SERVICES, Authorizer
from privmesh.runtime.context import CallContext, current_method, current_principal, refusal_audited
from privmesh.runtime.errors import Internal, PermissionDenied, ServiceError, Unauthenticated, to_grpc_status
from privmesh.runtime.identity import SAN_PROPERTY, principal_from_sans
from privmesh.runtime.kubeauth import TokenReviewer, bearer_token
from privmesh.runtime.logs import redact
from privmesh.runtime.metrics import ServerMetrics
from privmesh.runtime.ratelimit import RateLimiter
from privmesh.runtime.requests import check_request, checked_stream, guard_deserializer

log = logging.getLogger("privmesh.rpc")


def _principal_of(context: CallContext) -> str | None:
    sans = context.peer_identities()
    if not sans or context.peer_identity_key() != SAN_PROPERTY:
        return None
    return principal_from_sans(tuple(sans))


class MeshInterceptor:
    def __init__(self, authorizer: Authorizer, error_domain: str, metrics: ServerMetrics,
                 tracer: trace.Tracer | None = None, access_log: bool = False, *, trust_domain: str,
                 audit: AuditLog, token_reviewer: TokenReviewer | None = None,
                 limiter: RateLimiter | None = None) -> None:
        self._authorizer = authorizer
        self._token_reviewer = token_reviewer
        self._limiter = limiter
        self._audit = audit
        self._trust_prefix = f"spiffe://{trust_domain}/"
        self._domain = error_domain
        self._metrics = metrics
        self._tracer = tracer
        self._access_log = access_log
        self.declarations: dict[str, Declaration] = {}  # of contract-less services, by method

    def declaration_of(self, method: str) -> Declaration | None:
        """The method's declaration (None for health and reflection); DeclarationError when it has none."""
        if method.split("/", 1)[0] in ALWAYS_ALLOWED_SERVICES:
            return None
        return self.declarations.get(method) or declaration(method)

    async def _abort(self, context: CallContext, error: ServiceError) -> NoReturn:
        status = to_grpc_status(error, self._domain)
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _audit_refusal(self, method: str, principal: str, error: ServiceError) -> None:
        """Records a refusal; the call is refused whether or not the record could be written."""
        try:
            await self._audit.append(method.rpartition("/")[2], outcome="DENIED", principal=principal,
                                     details={"reason": error.reason, "method": method})
        except ServiceError:
            log.error("a refusal of %s could not be audited", method)

    async def _refuse(self, method: str, context: CallContext, principal: str,
                      error: ServiceError) -> NoReturn:
        await self._audit_refusal(method, principal, error)
        await self._abort(context, error)

    async def _admit(self, method: str, context: CallContext) -> str:
        principal = _principal_of(context)
        if principal is None and self._token_reviewer is not None and not context.peer_identities():
            # No client certificate at all: only the token port allows that; its callers present a token.
            token = bearer_token(context.invocation_metadata())
            if token is None:
                await self._refuse(method, context, "", Unauthenticated(
                    "UNAUTHENTICATED_PEER", "a client certificate or a service-account bearer token is required"))
            try:
                principal = await self._token_reviewer.principal(token)
            except ServiceError as error:
                await self._refuse(method, context, "", error)
        if principal is None:
            await self._refuse(method, context, "", Unauthenticated(
                "UNAUTHENTICATED_PEER", "a client certificate with one SPIFFE URI SAN is required"))
        if not principal.startswith(self._trust_prefix):
            await self._refuse(method, context, principal, Unauthenticated(
                "FOREIGN_TRUST_DOMAIN", f"{principal} is outside this service's trust domain "
                                        f"({self._trust_prefix.removesuffix('/')})"))
        if not self._authorizer.allows_method(principal, method):
            await self._refuse(method, context, principal, PermissionDenied(
                "PERMISSION_DENIED_BY_POLICY", f"{principal} may not call {method}"))
        return principal

    def _span(self, method: str, context: CallContext, principal: str) -> Any:
        if self._tracer is None:
            return contextlib.nullcontext()
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        return self._tracer.start_as_current_span(
            method, context=extract(carrier), kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.method": method, "privmesh.principal": principal})

    def _finish(self, method: str, principal: str, code: grpc.StatusCode, start: float, request: Any) -> None:
        elapsed = time.perf_counter() - start
        self._metrics.observe(method, code.name, elapsed)
        if self._access_log or code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            fields: dict[str, Any] = {"method": method, "principal": principal, "code": code.name,
                                      "duration_ms": round(elapsed * 1000, 3)}
            if self._access_log and isinstance(request, Message):
                fields["request"] = redact(request)
            log.info("rpc", extra={"fields": fields})

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` of "<package>.<Service>/<Method>" behind the mesh's checks (DeclarationError: none declared)."""
        declared = self.declaration_of(method)
        streaming_request = bool(handler.stream_unary or handler.stream_stream)
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary
            behavior = self._unary_response(inner, method, declared, streaming_request)
            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
        else:
            inner = handler.unary_stream or handler.stream_stream
            behavior = self._streaming_response(inner, method, declared, streaming_request)
            factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                       else grpc.stream_stream_rpc_method_handler)
        return factory(behavior, request_deserializer=guard_deserializer(handler.request_deserializer),
                       response_serializer=handler.response_serializer)

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context: CallContext, request: Any,
                    declared: Declaration | None, streaming_request: bool) -> AsyncIterator[None]:
        """Admits the caller within its rate limit, checks a unary request (a stream's messages are checked as
        they are read), sets the call context, and turns whatever the handler raises into a status."""
        principal = await self._admit(method, context)
        principal_token, method_token = current_principal.set(principal), current_method.set(method)
        call_token = self._authorizer.begin(declared) if declared is not None else None
        refusal_token = refusal_audited.set(False)
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            if self._limiter is not None:
                self._limiter.acquire(principal, method)
            if not streaming_request:
                check_request(request)
            with self._span(method, context, principal):
                yield
        except ServiceError as error:
            code = error.code
            if code == grpc.StatusCode.PERMISSION_DENIED and not refusal_audited.get():
                await self._audit_refusal(method, principal, error)
            await self._abort(context, error)
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unexpected error in %s", method)
            await self._abort(context, Internal("INTERNAL", "internal error"))
        finally:
            self._finish(method, principal, code, start, request)
            if call_token is not None:
                self._authorizer.end(call_token)
            current_principal.reset(principal_token)
            current_method.reset(method_token)
            refusal_audited.reset(refusal_token)

    async def _authorized_request(self, request: Any, declared: Declaration | None) -> Any:
        """The request once the caller may act on every resource it names (a stream: its first message)."""
        if declared is None or not declared.request:
            return request
        if isinstance(request, Message):
            self._authorizer.authorize_request(request)
            return request
        stream = aiter(request)
        first = await anext(stream, None)
        if first is None:
            return stream
        self._authorizer.authorize_request(first)
        return _prepend(first, stream)

    def _unary_response(self, inner: Any, method: str, declared: Declaration | None, streaming_request: bool) \
            -> Callable[..., Awaitable[Any]]:
        async def behavior(request: Any, context: CallContext) -> Any:
            async with self._call(method, context, request, declared, streaming_request):
                checked = checked_stream(request) if streaming_request else request
                reply = await inner(await self._authorized_request(checked, declared), context)
                if declared is not None:
                    self._authorizer.authorize_reply(reply if isinstance(reply, Message) else None)
                return reply

        return behavior

    def _streaming_response(self, inner: Any, method: str, declared: Declaration | None, streaming_request: bool) \
            -> Callable[..., AsyncIterator[Any]]:
        async def behavior(request: Any, context: CallContext) -> AsyncIterator[Any]:
            async with self._call(method, context, request, declared, streaming_request):
                checked = checked_stream(request) if streaming_request else request
                async for item in inner(await self._authorized_request(checked, declared), context):
                    if declared is not None:
                        self._authorizer.authorize_reply(None)
                    yield item

        return behavior


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """A generic handler (reflection's, or a service's fallback) whose handlers are wrapped on first use."""

    def __init__(self, inner: grpc.GenericRpcHandler, interceptor: MeshInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            try:
                wrapped = self._wrapped[method] = self._interceptor.wrap(handler, method.lstrip("/"))
            except DeclarationError:
                log.exception("refusing %s: it declares no authorization", method)
                return None
        return wrapped


class InterceptedServer(grpc.aio.Server):
    """A grpc.aio.Server whose handlers are wrapped by the mesh interceptor as they are registered."""

    def __init__(self, server: grpc.aio.Server, interceptor: MeshInterceptor) -> None:
        self._server = server
        self._interceptor = interceptor

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            [_WrappingGenericHandler(handler, self._interceptor) for handler in generic_rpc_handlers])

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._server.add_registered_method_handlers(service_name, {
            name: self._interceptor.wrap(handler, f"{service_name}/{name}")
            for name, handler in method_handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)
