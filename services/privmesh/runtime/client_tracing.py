"""Client interceptors of the runtime's channels: a CLIENT span per call and the W3C trace context
(traceparent, tracestate) in its metadata, so a call a service makes while serving one joins the caller's trace.

The span comes from the tracer of the server whose call is being served (`tracing.current_tracer`), else from
the process's global provider (a CLI or the demo that configured one); without either, the current context is
still injected, so a trace continues through a process that records nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.propagate import inject

from privmesh.runtime.tracing import INSTRUMENTATION, SCHEMA_URL, current_tracer, end_status, rpc_attributes

T = TypeVar("T")
_pending: set[asyncio.Task[None]] = set()  # span-ending tasks, kept referenced until they run


def _tracer() -> trace.Tracer:
    return current_tracer.get() or trace.get_tracer(INSTRUMENTATION, schema_url=SCHEMA_URL)


def _method(details: grpc.aio.ClientCallDetails) -> str:
    method: str | bytes = details.method  # the stubs say str; bytes stay accepted
    return (method.decode() if isinstance(method, bytes) else method).lstrip("/")


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """`details` with the current trace context added to its metadata."""
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    carrier: dict[str, str] = {}
    inject(carrier)
    for key, value in carrier.items():
        metadata[key] = value
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


async def _end_when_done(span: trace.Span, call: grpc.aio.Call) -> None:
    try:
        code = await call.code()
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
    end_status(span, code, server=False)
    span.end()


class _Tracing:
    """Shared by the four interceptor kinds: start the span, send the context, end the span with the status."""

    def __init__(self, target: str) -> None:
        self._target = target

    async def traced(self, details: grpc.aio.ClientCallDetails,
                     invoke: Callable[[grpc.aio.ClientCallDetails], Awaitable[T]]) -> T:
        method = _method(details)
        span = _tracer().start_span(method, kind=trace.SpanKind.CLIENT,
                                    attributes=rpc_attributes(method, self._target))
        try:
            with trace.use_span(span, end_on_exit=False):
                call = await invoke(_with_context(details))
        except BaseException:
            end_status(span, grpc.StatusCode.UNKNOWN, server=False)
            span.end()
            raise
        if isinstance(call, grpc.aio.Call):
            task = asyncio.get_running_loop().create_task(_end_when_done(span, call))
            _pending.add(task)
            task.add_done_callback(_pending.discard)
        else:
            end_status(span, grpc.StatusCode.OK, server=False)
            span.end()
        return call


class UnaryUnaryTracing(_Tracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                    request: Any) -> Any:
        return await self.traced(client_call_details, lambda d: continuation(d, request))


class UnaryStreamTracing(_Tracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                     request: Any) -> Any:
        return await self.traced(client_call_details, lambda d: continuation(d, request))


class StreamUnaryTracing(_Tracing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                     request_iterator: AsyncIterator[Any] | Any) -> Any:
        return await self.traced(client_call_details, lambda d: continuation(d, request_iterator))


class StreamStreamTracing(_Tracing, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails,
                                      request_iterator: AsyncIterator[Any] | Any) -> Any:
        return await self.traced(client_call_details, lambda d: continuation(d, request_iterator))


def tracing_interceptors(target: str) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind, for `grpc.aio.secure_channel(..., interceptors=...)`."""
    return [UnaryUnaryTracing(target), UnaryStreamTracing(target), StreamUnaryTracing(target),
            StreamStreamTracing(target)]
