"""The server builder every service uses: grpc.aio with mTLS on its port, the mesh interceptor,
health (a status per service), reflection (v1 and v1alpha), the AuditLog service, metrics on a separate port, and
a graceful drain on SIGTERM. Optional: a plaintext health-only port (for the kubelet's grpc probe) and a TLS port
for callers with Kubernetes service-account tokens (runtime.kubeauth).

A service provides a ServiceDefinition; `python -m privmesh.<service>` calls `run_service` with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from pydantic import BaseModel

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.access import Declaration
from privmesh.runtime.audit.checkpoint import log_origin
from privmesh.runtime.audit.log import AuditLog, load_or_create_signing_key
from privmesh.runtime.audit.servicer import AuditLogServicer
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.audit.witness import AuditWitnessServicer, witnessing
from privmesh.runtime.authz import Authorizer, PolicyError
from privmesh.runtime.config import ConfigError, ServerConfig, load_config
from privmesh.runtime.db import Database
from privmesh.runtime.identity import own_principal
from privmesh.runtime.interceptor import InterceptedServer, MeshInterceptor
from privmesh.runtime.kubeauth import TokenReviewer
from privmesh.runtime.logs import configure_logging
from privmesh.runtime.metrics import ServerMetrics
from privmesh.runtime.ratelimit import RateLimiter
from privmesh.runtime.reflection import enable_reflection
from privmesh.runtime.tls import server_credentials
from privmesh.runtime.tracing import INSTRUMENTATION, SCHEMA_URL, TracingError, exporter_choice, make_tracer_provider

log = logging.getLogger("privmesh.server")



async def _head_size(audit: AuditLog) -> int:
    """Signs a checkpoint of the current head (the periodic cosigning's step) and returns its size."""
    return int((await audit.checkpoint()).sequence)

@dataclass
class Runtime:
    """What the runtime hands a service when it builds it."""

    service: str
    config: ServerConfig
    audit: AuditLog
    authorizer: Authorizer
    on_close: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Registration:
    """A servicer and the generated add_*_to_server function (or a generic handler) that registers it.
    A service without a contract declares its methods' authorization here; others declare it in the contract."""

    service_name: str
    register: Callable[[grpc.aio.Server], None]
    declarations: Mapping[str, Declaration] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceDefinition:
    name: str  # e.g. "attestation-verifier": process name, audit chain and SPIFFE service account
    error_domain: str  # ErrorInfo.domain, e.g. "attestation.privmesh.dev"
    settings_model: type[BaseModel]
    build: Callable[[Runtime, Any], Awaitable[Sequence[Registration]]]


class MeshServer:
    """One running service. `start()` binds and serves; `stop()` drains."""

    def __init__(self, definition: ServiceDefinition, config: ServerConfig, settings: BaseModel,
                 span_exporter: SpanExporter | None = None) -> None:
        self.definition = definition
        self.config = config
        self.settings = settings
        self._span_exporter = span_exporter
        self.port = 0
        self.metrics_port = 0
        self.health_port = 0
        self.token_port = 0
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._runtime: Runtime | None = None
        self._db: Database | None = None
        self._cosigning: asyncio.Task[None] | None = None
        self._service_names: list[str] = []
        self.tracer_provider: TracerProvider | None = None

    @property
    def audit(self) -> AuditLog:
        assert self._runtime is not None
        return self._runtime.audit

    async def start(self) -> None:
        cfg, name = self.config, self.definition.name
        me = own_principal(cfg.tls.cert_file)
        if not me.startswith(f"spiffe://{cfg.trust_domain}/"):
            raise ConfigError(f"server.tls.cert_file: {me} is outside server.trust_domain {cfg.trust_domain}")
        authorizer = Authorizer.from_file(cfg.authz_policy)
        key = load_or_create_signing_key(cfg.audit.signing_key_file)
        self._db = Database(cfg.audit.database)
        store = AuditStore(self._db, name, key, cfg.audit.checkpoint_every, log_origin(cfg.trust_domain, name))
        metrics = ServerMetrics(name, cfg.tls.cert_file)
        audit = AuditLog(store, key.public_key(), cfg.audit.commit_delay_ms / 1000, observer=metrics)
        witness, cosigners = witnessing(self._db, store, key, cfg, name)
        self._runtime = Runtime(name, cfg, audit, authorizer)
        self.tracer_provider = make_tracer_provider(name, cfg.tracing, self._span_exporter)
        tracer = (None if self.tracer_provider is None
                  else self.tracer_provider.get_tracer(INSTRUMENTATION, schema_url=SCHEMA_URL))
        reviewer = (None if cfg.kubernetes_auth is None
                    else TokenReviewer.from_config(cfg.kubernetes_auth, cfg.trust_domain))
        interceptor = MeshInterceptor(authorizer, self.definition.error_domain, metrics, tracer, cfg.log.access_log,
                                      trust_domain=cfg.trust_domain, audit=audit, token_reviewer=reviewer,
                                      limiter=RateLimiter(cfg.rate_limits) if cfg.rate_limits else None)
        server = InterceptedServer(grpc.aio.server(options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]), interceptor)
        registrations = list(await self.definition.build(self._runtime, self.settings))
        registrations.append(Registration(
            common_pb2.DESCRIPTOR.services_by_name["AuditLog"].full_name,
            lambda s: common_pb2_grpc.add_AuditLogServicer_to_server(
                AuditLogServicer(audit, cfg.tls, authorizer, witness, cosigners, cfg.trust_domain), s)))
        registrations.append(Registration(
            common_pb2.DESCRIPTOR.services_by_name["AuditWitness"].full_name,
            lambda s: common_pb2_grpc.add_AuditWitnessServicer_to_server(
                AuditWitnessServicer(witness, cfg.tls), s)))
        for registration in registrations:
            interceptor.declarations.update(registration.declarations)
            registration.register(server)
        self._service_names = [r.service_name for r in registrations]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        enable_reflection([*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
        self.port = server.add_secure_port(cfg.listen, server_credentials(cfg.tls))
        if self.port == 0:
            raise OSError(f"could not bind {cfg.listen}")
        interceptor.address = f"{cfg.listen.rpartition(':')[0]}:{self.port}"
        if cfg.kubernetes_auth is not None:
            self.token_port = server.add_secure_port(cfg.kubernetes_auth.listen,
                                                     server_credentials(cfg.tls, require_client_auth=False))
            if self.token_port == 0:
                raise OSError(f"could not bind {cfg.kubernetes_auth.listen}")
        await server.start()
        self._server = server
        if cfg.health_listen is not None:
            await self._start_health_port(cfg.health_listen)
        if cfg.metrics.enabled:
            self.metrics_port = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        self._metrics = metrics
        for service_name in ["", *self._service_names]:
            await self.health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        if cosigners is not None and cfg.audit.cosign_interval_seconds:
            self._cosigning = asyncio.create_task(cosigners.run(cfg.audit.cosign_interval_seconds,
                                                                lambda: _head_size(audit)))
        log.info("serving", extra={"fields": {"port": self.port, "metrics_port": self.metrics_port,
                                              "health_port": self.health_port, "token_port": self.token_port,
                                              "services": self._service_names}})

    async def _start_health_port(self, address: str) -> None:
        """A plaintext port with grpc.health.v1 only, for the kubelet's native grpc probe: the same statuses as
        the mTLS port, nothing else registered (no service, no reflection), not behind the interceptor."""
        health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
        self.health_port = health_server.add_insecure_port(address)
        if self.health_port == 0:
            raise OSError(f"could not bind {address}")
        await health_server.start()
        self._health_server = health_server

    async def stop(self, grace: float | None = None) -> None:
        """Drains: reports NOT_SERVING, lets in-flight calls finish within the grace period, seals the log."""
        if self._server is None:
            return
        if self._cosigning is not None:
            self._cosigning.cancel()
            self._cosigning = None
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.config.drain_seconds if grace is None else grace)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None
        self._metrics.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # exports what is still batched
        assert self._runtime is not None
        try:
            await self._runtime.audit.checkpoint()
        except Exception:  # the log stays verifiable up to its last checkpoint
            log.warning("could not sign a final audit checkpoint")
        for close in reversed(self._runtime.on_close):
            result = close()
            if result is not None:
                await result
        if self._db is not None:
            self._db.close()

    async def wait(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


async def _serve_until_signalled(server: MeshServer) -> None:
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("draining")
    await server.stop()


def run_service(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m privmesh.<service>`."""
    parser = argparse.ArgumentParser(prog=f"python -m privmesh.{definition.name}",
                                     description=f"Runs the privmesh {definition.name} service.")
    parser.add_argument("--config", type=Path, default=os.environ.get("PRIVMESH_CONFIG"),
                        help="YAML configuration file (also PRIVMESH_CONFIG); PRIVMESH_* variables override it")
    args = parser.parse_args(argv)
    try:
        config, settings = load_config(args.config, definition.settings_model)
        Authorizer.from_file(config.authz_policy)
        exporter_choice(config.tracing)
    except (ConfigError, PolicyError, TracingError) as exc:
        print(f"{definition.name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(definition.name, config.log.level)
    asyncio.run(_serve_until_signalled(MeshServer(definition, config, settings)))
    return 0
