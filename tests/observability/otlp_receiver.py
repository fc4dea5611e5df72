"""An OTLP trace receiver for the tests, on opentelemetry-proto: the collector's trace service over gRPC and
its /v1/traces over HTTP (protobuf), keeping every request it is sent.

Written here rather than running the OpenTelemetry Collector: the collector with an OTLP receiver and a file
exporter did not build in a test-sized time on the shared 2-core CI machine (docs/observability.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    span: Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


class Received:
    """Every export request, in order of arrival (thread-safe: gRPC and HTTP handlers add to it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.requests)
        return [ReceivedSpan(str(attributes(rs.resource.attributes).get("service.name")), span)
                for request in requests for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def as_json(self) -> Iterator[str]:
        with self._lock:
            requests = list(self.requests)
        return (MessageToJson(r) for r in requests)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: trace_service_pb2.ExportTraceServiceRequest,
               context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        self._received.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def grpc_receiver(received: Received) -> tuple[grpc.Server, int]:
    """A started OTLP/gRPC receiver on loopback (plaintext, as OTEL_EXPORTER_OTLP_INSECURE=true expects)."""
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def http_receiver(received: Received) -> tuple[ThreadingHTTPServer, int]:
    """A started OTLP/HTTP receiver (POST /v1/traces, application/x-protobuf) on loopback."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            received.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
