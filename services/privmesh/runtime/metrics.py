"""Prometheus metrics per server (own registry, so several servers can live in one test process), served on a
port of their own.

RPC metrics carry the grpc-ecosystem names (go-grpc-middleware's Prometheus provider): the names the
published gRPC dashboards and alerts query, stable for years, where the OpenTelemetry RPC metrics are still
"development" in the semantic conventions. No metric has a `service` label (the one a ServiceMonitor adds):
the gRPC service is `grpc_service`, this process is `privmesh_service` on privmesh_service_info.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from privmesh.runtime.tracing import split_method

# Seconds. Beyond the grpc-ecosystem defaults: sub-millisecond steps for cached calls, minutes for streams.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RPC = ("grpc_type", "grpc_service", "grpc_method")
ALL_CODES = tuple(code.name for code in grpc.StatusCode)

# No *_created series: the text format's scrapers do not use them, and they would double every scrape.
disable_created_metrics()  # type: ignore[no-untyped-call]


def grpc_type(client_streaming: bool, server_streaming: bool) -> str:
    """The grpc_type label value of a method."""
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


class _CertificateExpiry(Collector):
    """The serving certificate's notAfter, read at every scrape (the file is rotated in place)."""

    def __init__(self, cert_file: Path) -> None:
        self._cert_file = cert_file

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("privmesh_tls_certificate_expiry_timestamp_seconds",
                                   "notAfter of this server's mTLS certificate, as a Unix timestamp")
        try:
            certificate = x509.load_pem_x509_certificate(self._cert_file.read_bytes())
        except (OSError, ValueError):
            family.add_metric([], 0.0)  # unreadable: as urgent as an expired certificate
        else:
            family.add_metric([], certificate.not_valid_after_utc.timestamp())
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily("privmesh_tls_certificate_expiry_timestamp_seconds", "")]


class ServerMetrics:
    def __init__(self, service: str, cert_file: Path | None = None) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
        if cert_file is not None:
            registry.register(_CertificateExpiry(cert_file))
        info = Gauge("privmesh_service_info", "Always 1; names the privmesh service of this process",
                     ["privmesh_service"], registry=registry)
        info.labels(service).set(1)
        self.started = Counter("grpc_server_started_total", "RPCs started on the server", _RPC, registry=registry)
        self.handled = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code",
                               [*_RPC, "grpc_code"], registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds", "Time from the start of an RPC to its status",
                                  _RPC, buckets=_BUCKETS, registry=registry)
        self.errors = Counter("privmesh_grpc_server_errors_total",
                              "RPCs that ended with a non-OK code, by code and google.rpc.ErrorInfo reason",
                              ["grpc_service", "grpc_method", "grpc_code", "reason"], registry=registry)
        self.refusals = Counter("privmesh_grpc_server_refusals_total",
                                "Calls refused before their handler ran (authentication, authorization, rate "
                                "limit, undecodable request), by reason",
                                ["grpc_service", "grpc_method", "reason"], registry=registry)
        self.audit_records = Counter("privmesh_audit_records_total", "Audit records written, by operation and "
                                     "outcome", ["operation", "outcome"], registry=registry)
        self.audit_failures = Counter("privmesh_audit_write_failures_total",
                                      "Audit records that could not be written (the operations failed closed)",
                                      registry=registry)
        self._types: dict[str, str] = {}
        self._http: Any = None

    def initialize(self, method: str, rpc_type: str) -> None:
        """Creates every series of `method` at zero, so rates and alerts see it before its first call."""
        self._types[method] = rpc_type
        service, name = split_method(method)
        self.started.labels(rpc_type, service, name)
        self.handling.labels(rpc_type, service, name)
        for code in ALL_CODES:
            self.handled.labels(rpc_type, service, name, code)

    def type_of(self, method: str) -> str:
        return self._types.get(method, "unary")

    def start(self, method: str) -> None:
        service, name = split_method(method)
        self.started.labels(self.type_of(method), service, name).inc()

    def observe(self, method: str, code: grpc.StatusCode, seconds: float, reason: str = "") -> None:
        service, name = split_method(method)
        rpc_type = self.type_of(method)
        self.handled.labels(rpc_type, service, name, code.name).inc()
        self.handling.labels(rpc_type, service, name).observe(seconds)
        if code != grpc.StatusCode.OK:
            self.errors.labels(service, name, code.name, reason or code.name).inc()

    def refused(self, method: str, reason: str) -> None:
        service, name = split_method(method)
        self.refusals.labels(service, name, reason).inc()

    def audit_recorded(self, operation: str, outcome: str) -> None:
        self.audit_records.labels(operation, outcome).inc()

    def audit_failed(self, count: int) -> None:
        self.audit_failures.inc(count)

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint; returns the bound port."""
        self._http, _ = start_http_server(port, host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

