"""The one server interceptor: mTLS identity, deny-by-default authorization, error translation, metrics,
access logs and tracing, applied to every method of every service on the server. Every refusal (an
unauthenticated or foreign peer, a method or resource the policy denies) is audited with its reason, unless the
serving code audited it itself; every refusal (those, a rate limit, an undecodable request) is also counted by
reason, recorded on the call's span and logged at WARNING.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
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
from privmesh.runtime.logs import level_of, redact
from privmesh.runtime.metrics import ServerMetrics, grpc_type
from privmesh.runtime.ratelimit import RateLimiter
from privmesh.runtime.requests import check_request, checked_stream, guard_deserializer
from privmesh.runtime.tracing import current_tracer, end_status, peer_attributes, record_exception, rpc_attributes

log = logging.getLogger("privmesh.rpc")

# Reasons of calls refused before (or instead of) their handler's work, besides every UNAUTHENTICATED and
# PERMISSION_DENIED: a rate limit, a request that does not decode.
REFUSAL_REASONS = frozenset({"RATE_LIMITED", "MALFORMED_REQUEST"})


def is_refusal(code: grpc.StatusCode, reason: str) -> bool:
    return code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or reason in REFUSAL_REASONS


def _principal_of(context: CallContext) -> str | None:
    sans = context.peer_identities()
    if not sans or context.peer_identity_key() != SAN_PROPERTY:
        return None
    return principal_from_sans(tuple(sans))


class MeshInterceptor:
    address = ""  # host:port of the mTLS port, once bound (the spans' server.address/port)

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

    async def _refuse(self, method: str, principal: str, error: ServiceError) -> NoReturn:
        await self._audit_refusal(method, principal, error)
        raise error

    async def _admit(self, method: str, context: CallContext) -> str:
        principal = _principal_of(context)
        if principal is None and self._token_reviewer is not None and not context.peer_identities():
            # No client certificate at all: only the token port allows that; its callers present a token.
            token = bearer_token(context.invocation_metadata())
            if token is None:
                await self._refuse(method, "", Unauthenticated(
                    "UNAUTHENTICATED_PEER", "a client certificate or a service-account bearer token is required"))
            try:
                principal = await self._token_reviewer.principal(token)
            except ServiceError as error:
                await self._refuse(method, "", error)
        if principal is None:
            await self._refuse(method, "", Unauthenticated(
                "UNAUTHENTICATED_PEER", "a client certificate with one SPIFFE URI SAN is required"))
        if not principal.startswith(self._trust_prefix):
            await self._refuse(method, principal, Unauthenticated(
                "FOREIGN_TRUST_DOMAIN", f"{principal} is outside this service's trust domain "
                                        f"({self._trust_prefix.removesuffix('/')})"))
        if not self._authorizer.allows_method(principal, method):
            await self._refuse(method, principal, PermissionDenied(
                "PERMISSION_DENIED_BY_POLICY", f"{principal} may not call {method}"))
        return principal

    def _span(self, method: str, context: CallContext) -> Any:
        """The server span, continuing the caller's W3C context; without a tracer, the caller's context alone,
        so this service's own calls still carry the caller's trace."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        parent = extract(carrier)
        if self._tracer is None:
            return trace.use_span(trace.get_current_span(parent), end_on_exit=False)
        attributes = {**rpc_attributes(method, self.address), **peer_attributes("client", context.peer() or "")}
        return self._tracer.start_as_current_span(method, context=parent, kind=trace.SpanKind.SERVER,
                                                  attributes=attributes, record_exception=False,
                                                  set_status_on_exception=False)

    def _finish(self, method: str, principal: str, code: grpc.StatusCode, reason: str, refused: bool,
                start: float, request: Any) -> None:
        elapsed = time.perf_counter() - start
        self._metrics.observe(method, code, elapsed, reason)
        if refused:
            self._metrics.refused(method, reason)
        if self._access_log or code not in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            fields: dict[str, Any] = {"method": method, "principal": principal, "code": code.name,
                                      "duration_ms": round(elapsed * 1000, 3)}
            if reason:
                fields["reason"] = reason
            if self._access_log and isinstance(request, Message):
                fields["request"] = redact(request)
            log.log(logging.WARNING if refused else level_of(code), "refused" if refused else "rpc",
                    extra={"fields": fields})

    def wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler` of "<package>.<Service>/<Method>" behind the mesh's checks (DeclarationError: none declared)."""
        declared = self.declaration_of(method)
        streaming_request = bool(handler.stream_unary or handler.stream_stream)
        self._metrics.initialize(method, grpc_type(streaming_request, bool(handler.unary_stream
                                                                           or handler.stream_stream)))
        behavior: Callable[..., Awaitable[Any]] | Callable[..., AsyncIterator[Any]]
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
        they are read), sets the call context, and turns whatever the handler raises into a status. Every
        call, refused ones included, is counted, traced and (unless OK) logged."""
        start, code, reason, principal = time.perf_counter(), grpc.StatusCode.OK, "", ""
        self._metrics.start(method)
        tracer_token, method_token = current_tracer.set(self._tracer), current_method.set(method)
        refusal_token = refusal_audited.set(False)
        principal_token, call_token = None, None
        with self._span(method, context) as span:
            try:
                principal = await self._admit(method, context)
                span.set_attribute("privmesh.principal", principal)
                principal_token = current_principal.set(principal)
                call_token = self._authorizer.begin(declared) if declared is not None else None
                if self._limiter is not None:
                    self._limiter.acquire(principal, method)
                if not streaming_request:
                    check_request(request)
                yield
            except ServiceError as error:
                code, reason = error.code, error.reason
                admitted = principal_token is not None  # _admit audits its own refusals
                if code == grpc.StatusCode.PERMISSION_DENIED and admitted and not refusal_audited.get():
                    await self._audit_refusal(method, principal, error)
                await self._abort(context, error)
            except grpc.aio.AbortError:
                # types-grpcio says code() is a StatusCode; grpc.aio returns None when none was set.
                code = context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[unreachable]
                raise
            except Exception as error:
                code, reason = grpc.StatusCode.INTERNAL, "INTERNAL"
                record_exception(span, error)
                log.exception("unexpected error in %s", method)
                await self._abort(context, Internal("INTERNAL", "internal error"))
            finally:
                refused = is_refusal(code, reason)
                end_status(span, code, reason, server=True)
                if refused:
                    span.set_attribute("privmesh.refused", True)
                self._finish(method, principal, code, reason, refused, start, request)
                if call_token is not None:
                    self._authorizer.end(call_token)
                if principal_token is not None:
                    current_principal.reset(principal_token)
                current_method.reset(method_token)
                refusal_audited.reset(refusal_token)
                current_tracer.reset(tracer_token)

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

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
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
