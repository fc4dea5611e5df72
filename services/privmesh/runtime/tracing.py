"""OpenTelemetry tracing of every RPC: the tracer provider of a server (OTLP over gRPC or HTTP, or JSON lines
on stdout), and what every span carries. Attributes follow the OpenTelemetry semantic conventions v1.37.0
for RPC spans (rpc.system, rpc.service, rpc.method, rpc.grpc.status_code, server.*, client.*).

Spans never carry a request or reply field: only the method, the peer, the status code and the error reason.
Exception events name the exception type and the privmesh frames by module path, never an install path.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from types import TracebackType

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from privmesh.runtime.config import TracingConfig

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
INSTRUMENTATION = "privmesh.runtime"

# The tracer of the server whose call is being served: client calls made while serving it are its spans.
current_tracer: ContextVar[trace.Tracer | None] = ContextVar("privmesh_tracer", default=None)


class TracingError(ValueError):
    """OTEL_TRACES_EXPORTER names an exporter this runtime does not ship."""


def exporter_choice(config: TracingConfig) -> tuple[str, str]:
    """(exporter, OTLP protocol) from OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL or the config;
    TracingError for a value this runtime does not ship, so a service refuses to start on it."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", config.exporter).strip().lower()
    if name not in ("otlp", "console", "none"):
        raise TracingError(f"OTEL_TRACES_EXPORTER={name}: expected otlp, console or none")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip()
    if protocol not in ("grpc", "http/protobuf"):
        raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: expected grpc or http/protobuf")
    return name, protocol


def _exporter(name: str, protocol: str) -> SpanExporter | None:
    """The exporter `name`; the OTLP ones read the other OTEL_EXPORTER_OTLP_* variables themselves."""
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def make_tracer_provider(service: str, config: TracingConfig,
                         exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The server's provider, or None when tracing is off. Tests pass their own exporter, which then gets
    each span as it ends; configured exporters get batches (OTEL_BSP_* tune them)."""
    processor: SpanProcessor
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    else:
        configured = _exporter(*exporter_choice(config))
        if configured is None:
            return None
        processor = BatchSpanProcessor(configured)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are merged in by Resource.create; OTEL_TRACES_SAMPLER
    # replaces the configured sampler when set.
    resource = Resource.create({"service.name": service}, schema_url=SCHEMA_URL)
    sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBasedTraceIdRatio(config.sample_ratio)
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(processor)
    return provider


def split_method(method: str) -> tuple[str, str]:
    """"pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def _host_port(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, None
    return host.strip("[]"), int(port) if port.isdigit() else None


def peer_attributes(prefix: str, peer: str) -> dict[str, AttributeValue]:
    """`client.address`/`client.port` (prefix "client") of a grpc peer string such as "ipv4:127.0.0.1:5000"."""
    scheme, _, address = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return {}
    host, port = _host_port(address)
    attributes: dict[str, AttributeValue] = {f"{prefix}.address": host}
    if port is not None:
        attributes[f"{prefix}.port"] = port
    return attributes


def rpc_attributes(method: str, server_address: str) -> dict[str, AttributeValue]:
    service, name = split_method(method)
    host, port = _host_port(server_address)
    attributes: dict[str, AttributeValue] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name,
                                             "server.address": host}
    if port is not None:
        attributes["server.port"] = port
    return attributes


def end_status(span: Span, code: grpc.StatusCode, reason: str = "", *, server: bool) -> None:
    """Records the status code; a server span is an error only for server faults (the conventions' rule)."""
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if reason:
        span.set_attribute("privmesh.error.reason", reason)
    faults = SERVER_FAULTS if server else frozenset(grpc.StatusCode) - {grpc.StatusCode.OK}
    if code in faults:
        span.set_status(Status(StatusCode.ERROR, code.name))


SERVER_FAULTS = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
                           grpc.StatusCode.DATA_LOSS})


def relative_frames(tb: TracebackType | None) -> str:
    """The traceback's frames as "module path:line in function", with install prefixes removed."""
    lines = []
    for frame in traceback.extract_tb(tb):
        path = frame.filename.replace(os.sep, "/")
        for marker in ("/site-packages/", "/services/", "/lib/python"):
            if marker in path:
                path = path.rsplit(marker, 1)[1]
                break
        else:
            path = path.rsplit("/", 1)[-1]
        lines.append(f"{path}:{frame.lineno} in {frame.name}")
    return "\n".join(lines)


def record_exception(span: Span, error: BaseException) -> None:
    """An `exception` event with the type and the relative frames; the message is left out (it may quote input)."""
    attributes: Mapping[str, AttributeValue] = {
        "exception.type": type(error).__qualname__, "exception.stacktrace": relative_frames(error.__traceback__)}
    span.add_event("exception", attributes)
