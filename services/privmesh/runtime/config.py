"""Server configuration: a YAML file overlaid by PRIVMESH_* environment variables, validated at start.

Layout (both sections are validated; `service` by the service's own pydantic model):

    server:  {listen, trust_domain, tls: {...}, authz_policy, audit: {...}, metrics: {...}, log: {...}, ...}
    service: {...}

An environment variable PRIVMESH_SERVER__TLS__CA_FILE=/x overrides server.tls.ca_file; a value that
starts with '[' or '{' is read as JSON.

The overlay is written by hand rather than with pydantic-settings because pydantic-settings silently drops a
PRIVMESH_* variable that names no field (PRIVMESH_SERVRE__LISTEN leaves the listen address as it was), and a
misspelt security setting must stop the start instead; here it is an error naming the section.
tests/runtime/test_config_env.py checks that both give the same configuration from the same file and variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, field_validator

ENV_PREFIX = "PRIVMESH_"
M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem, one per line, by field path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    ca_file: FilePath = Field(description="PEM bundle of the mesh CA(s) that peers' certificates must chain to")
    cert_file: FilePath = Field(description="this service's certificate (PEM), with its SPIFFE URI SAN")
    key_file: FilePath = Field(description="this service's private key (PEM); never logged")


class WitnessPeerConfig(_Strict):
    service: str = Field(pattern=r"^[a-z0-9-]{1,63}$", description="the peer service (its SPIFFE service account)")
    target: str = Field(description="host:port of the peer's mTLS endpoint")


class AuditConfig(_Strict):
    database: str = Field(description="sqlite:///path or postgresql://... (the password may come from env)")
    witnesses: list[WitnessPeerConfig] = Field(
        default_factory=list, description="peer services asked to cosign this log's checkpoints (tlog-witness)")
    signing_key_file: Path = Field(description="Ed25519 private key (PEM) that signs checkpoints; created if absent")
    witness_key_file: Path | None = Field(
        None, description="Ed25519 private key (PEM) this service cosigns other logs' checkpoints with; created if "
                          "absent (default: the audit signing key). Rotate by pointing it at a new file "
                          "(docs/evidence.md)")
    checkpoint_every: int = Field(100, ge=1, le=100_000, description="sign a checkpoint every N entries")
    cosign_interval_seconds: float = Field(
        0, ge=0, le=86_400, description="every N seconds, sign a checkpoint of the log and have the witnesses "
                                        "cosign it (0: only when a head is read); needs witnesses")
    commit_delay_ms: float = Field(2.0, ge=0, le=50, description="under load, wait this long to group commits")


class MetricsConfig(_Strict):
    """The Prometheus /metrics endpoint (plain HTTP: in a cluster only the chart's NetworkPolicy lets the
    monitoring namespace reach it, see docs/observability.md)."""

    enabled: bool = True
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 in a pod so Prometheus can scrape it")
    port: int = Field(9090, ge=0, le=65535, description="fixed scrape port (the chart's); 0 picks a free one")


class LogConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = Field(False, description="log every RPC at INFO (requests are redacted)")


class TracingConfig(_Strict):
    """Spans of every RPC. The standard OTEL_* variables win over these settings: OTEL_TRACES_EXPORTER,
    OTEL_TRACES_SAMPLER(_ARG), and OTEL_EXPORTER_OTLP_* (endpoint, protocol grpc or http/protobuf, headers,
    certificates), which only they configure."""

    exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="otlp: to OTEL_EXPORTER_OTLP_ENDPOINT; console: JSON lines on stdout, never the log stream")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0,
                                description="share of new traces recorded; a caller's sampled flag is followed")


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port with a port in 0..65535")
    return value


class KubernetesAuthConfig(_Strict):
    """Callers outside the mesh present a Kubernetes service-account token on a port of their own."""

    listen: str = Field(description="host:port of the TLS port (no client certificate) that takes tokens")
    audience: str = Field("privmesh", min_length=1, description="the audience tokens must be bound to")
    cache_seconds: float = Field(10.0, ge=0, le=300, description="how long a positive review is reused")
    kubeconfig: FilePath | None = Field(None, description="None: in-cluster (the pod's own service account)")

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return _host_port(value)


class RateLimitGroup(_Strict):
    """Calls to `methods` (authorization-policy globs), per caller identity: `per_second` on average, at
    most `burst` at once. A method counts against the first group that matches it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    methods: tuple[str, ...] = Field(min_length=1)
    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class ServerConfig(_Strict):
    listen: str = Field("127.0.0.1:0", description="host:port; port 0 picks a free port")
    health_listen: str | None = Field(None, description="host:port of a plaintext port serving only "
                                      "grpc.health.v1 (the kubelet's grpc probe cannot do mTLS); None: no such port")
    kubernetes_auth: KubernetesAuthConfig | None = Field(None, description="accept service-account tokens")
    trust_domain: str = Field("privmesh.local", pattern=r"^[a-z0-9.\-_]{1,255}$")
    tls: TlsConfig
    authz_policy: FilePath = Field(description="YAML authorization policy (deny by default)")
    audit: AuditConfig
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    tracing: TracingConfig = TracingConfig()
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    drain_seconds: float = Field(10.0, ge=0, le=300)
    state_dir: Path = Field(Path("."), description="where the service keeps local state")
    rate_limits: tuple[RateLimitGroup, ...] = Field((), description="per-identity token buckets; none: unlimited")

    @field_validator("listen", "health_listen")
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        return None if value is None else _host_port(value)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "PRIVMESH_CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name}: not valid JSON ({exc.msg})") from exc
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another variable")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format(section: str, error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in (section, *item["loc"]))
        lines.append(f"{where}: {item['msg']}")
    return lines


def load_config(path: Path | None, service_model: type[M],
                environ: Mapping[str, str] | None = None) -> tuple[ServerConfig, M]:
    """Reads, merges and validates; raises ConfigError naming every bad field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping with 'server' and 'service'")
        data = loaded or {}
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    unknown = sorted(set(data) - {"server", "service"})
    problems = [f"{key}: unknown section (expected 'server' and 'service')" for key in unknown]
    server = service = None
    try:
        server = ServerConfig.model_validate(data.get("server") or {})
    except ValidationError as exc:
        problems += _format("server", exc)
    try:
        service = service_model.model_validate(data.get("service") or {})
    except ValidationError as exc:
        problems += _format("service", exc)
    if problems or server is None or service is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return server, service
