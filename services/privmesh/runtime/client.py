"""The client-channel builder: mTLS with the caller's mesh identity, a default deadline on every call, and
retries (through the gRPC service config) only for methods the contract marks idempotent."""

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


def secure_channel(target: str, identity: ClientIdentity, services: Iterable[ServiceDescriptor] = (),
                   timeout_seconds: float = 30.0, max_message_bytes: int = 4 * 1024 * 1024) -> grpc.aio.Channel:
    """An aio channel to a mesh service. Calls without an explicit timeout get `timeout_seconds`."""
    credentials = channel_credentials(identity.ca_file, identity.cert_file, identity.key_file)
    options = [
        ("grpc.service_config", json.dumps(service_config(services, timeout_seconds))),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    return grpc.aio.secure_channel(target, credentials, options=options)
