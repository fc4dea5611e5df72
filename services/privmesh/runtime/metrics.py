"""Prometheus metrics per server (own registry, so several servers can live in one test process), served
on a separate port from the gRPC one."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ServerMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("privmesh_grpc_requests", "RPCs handled, by method and status code",
                                ["service", "method", "code"], registry=self.registry)
        self.latency = Histogram("privmesh_grpc_request_duration_seconds", "RPC latency by method",
                                 ["service", "method"], buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("privmesh_grpc_errors", "RPCs that ended with a non-OK code, by method and code",
                              ["service", "method", "code"], registry=self.registry)
        self.service = service
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._http: Any = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(self.service, method, code), self.latency.labels(self.service, method),
                        self.errors.labels(self.service, method, code) if code != "OK" else None)
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint; returns the bound port."""
        self._http, _ = start_http_server(port, host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
