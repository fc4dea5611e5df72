"""The client-channel builder: mTLS with the caller's mesh identity, the server's expected SPIFFE ID pinned, a
default deadline on every call, and retries (through the gRPC service config) only for methods the contract marks
idempotent. Every call carries the W3C trace context and gets a client span (runtime.client_tracing).

The pin is gRPC's own target-name check: with `grpc.ssl_target_name_override` set to the expected SPIFFE ID's DNS
form (`SpiffeId.dns_name`, which every mesh certificate carries beside its URI SAN), the TLS handshake fails
unless the server certificate from the mesh CA names that identity, so another mesh identity cannot pose as the
service ("Hostname Verification Check failed"). gRPC Python has no other hook into the client's certificate check,
and gRPC matches DNS SANs only, not URI SANs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from grpc_health.v1 import health_pb2

from privmesh.common.v1 import common_pb2
from privmesh.runtime.client_tracing import tracing_interceptors
from privmesh.runtime.identity import SpiffeId
from privmesh.runtime.tls import channel_credentials

RETRYABLE = ("UNAVAILABLE",)
SAFE_TO_RETRY = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


@dataclass(frozen=True)
class ClientIdentity:
    """A caller's mesh credentials (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _is_idempotent(method: MethodDescriptor) -> bool:
    return method.GetOptions().idempotency_level in SAFE_TO_RETRY


def service_config(services: Iterable[ServiceDescriptor], timeout_seconds: float) -> dict[str, object]:
    """A deadline for every method; a retry policy for the idempotent ones."""
    retry = {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2,
             "retryableStatusCodes": list(RETRYABLE)}
    timeout = f"{timeout_seconds:.3f}s"
    configs: list[dict[str, object]] = []
    for service in [*services, common_pb2.DESCRIPTOR.services_by_name["AuditLog"],
                    health_pb2.DESCRIPTOR.services_by_name["Health"]]:
        idempotent = [m for m in service.methods if _is_idempotent(m)]
        if idempotent:
            configs.append({"name": [{"service": service.full_name, "method": m.name} for m in idempotent],
                            "timeout": timeout, "retryPolicy": retry})
        others = [m for m in service.methods if not _is_idempotent(m)]
        if others:
            configs.append({"name": [{"service": service.full_name, "method": m.name} for m in others],
                            "timeout": timeout})
    configs.append({"name": [{}], "timeout": timeout})
    return {"methodConfig": configs}


def pinned_options(target: str, peer: str) -> list[tuple[str, str]]:
    """The channel options that make the handshake accept only a server certificate carrying `peer` (a SPIFFE ID),
    while the HTTP/2 authority stays the target's host."""
    host = target.rpartition(":")[0] or target
    return [("grpc.ssl_target_name_override", SpiffeId.parse(peer).dns_name), ("grpc.default_authority", host)]


def secure_channel(target: str, identity: ClientIdentity, services: Iterable[ServiceDescriptor] = (),
                   timeout_seconds: float = 30.0, max_message_bytes: int = 4 * 1024 * 1024, *,
                   peer: str) -> grpc.aio.Channel:
    """An aio channel to the mesh service whose SPIFFE ID is `peer`. Calls without an explicit timeout get
    `timeout_seconds`."""
    credentials = channel_credentials(identity.ca_file, identity.cert_file, identity.key_file)
    options: list[tuple[str, object]] = [
        *pinned_options(target, peer),
        ("grpc.service_config", json.dumps(service_config(services, timeout_seconds))),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=tracing_interceptors(target))
