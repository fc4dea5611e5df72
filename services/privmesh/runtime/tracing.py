"""Optional OpenTelemetry tracing: a server span per RPC, continuing the caller's W3C traceparent."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter


def make_tracer(service: str, exporter_name: str, exporter: SpanExporter | None = None) -> trace.Tracer | None:
    """A tracer for this server, or None when tracing is off. Tests pass their own exporter."""
    if exporter is None:
        if exporter_name == "none":
            return None
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("privmesh.runtime")
