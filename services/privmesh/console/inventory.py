"""What the console shows of each service's own state, read through its List methods as the auditor: keys
and their rotation, token fields, datasets and the privacy-budget ledger, federations and runs, attestation
policies, FHE models. Calls are built from the generated descriptors, so a page is one table per method."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory

# Importing the generated modules registers their descriptors.
from privmesh.attestation.v1 import attestation_pb2  # noqa: F401
from privmesh.dpgateway.v1 import dpgateway_pb2  # noqa: F401
from privmesh.fhe.v1 import fhe_pb2  # noqa: F401
from privmesh.fl.v1 import fl_pb2  # noqa: F401
from privmesh.keybroker.v1 import keybroker_pb2  # noqa: F401
from privmesh.runtime.client import ClientIdentity, secure_channel
from privmesh.tokenvault.v1 import tokenvault_pb2  # noqa: F401

MAX_PAGES = 20


@dataclass(frozen=True)
class Source:
    service: str
    method: str  # full name, e.g. "privmesh.keybroker.v1.KeyBroker.ListKeys"
    title: str
    request: tuple[tuple[str, str], ...] = ()  # fields every request sets


SOURCES = (
    Source("key-broker", "privmesh.keybroker.v1.KeyBroker.ListKeys", "keys, policies and rotation"),
    Source("token-vault", "privmesh.tokenvault.v1.TokenVault.ListFields", "token fields",
           (("parent", "tenants/-"),)),
    Source("dp-gateway", "privmesh.dpgateway.v1.DPGateway.ListDatasets", "datasets and budgets"),
    Source("dp-gateway", "privmesh.dpgateway.v1.DPGateway.ListLedger", "privacy-budget ledger"),
    Source("fl-coordinator", "privmesh.fl.v1.FLCoordinator.ListFederations", "federations"),
    Source("attestation-verifier", "privmesh.attestation.v1.AttestationVerifier.ListPolicies",
           "attestation policies"),
    Source("fhe-inference", "privmesh.fhe.v1.FHEInference.ListModels", "FHE models"),
)

METHODS = tuple(s.method.rsplit(".", 1)[0] + "/" + s.method.rsplit(".", 1)[1] for s in SOURCES)


async def read(source: Source, target: str, peer: str, identity: ClientIdentity) -> list[dict[str, Any]]:
    """Every item the method lists (following page tokens), as JSON objects."""
    method = descriptor_pool.Default().FindMethodByName(source.method)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    items_field = next(f for f in method.output_type.fields if f.label == f.LABEL_REPEATED)
    path = f"/{method.containing_service.full_name}/{method.name}"
    items: list[dict[str, Any]] = []
    async with secure_channel(target, identity, timeout_seconds=10, peer=peer) as channel:
        call = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=response_class.FromString)
        token = ""
        for _ in range(MAX_PAGES):
            request = json_format.ParseDict(dict(source.request), request_class())
            if "page_token" in method.input_type.fields_by_name:
                request.page_token = token
            reply = await call(request)
            items += [json_format.MessageToDict(m) for m in getattr(reply, items_field.name)]
            token = getattr(reply, "next_page_token", "")
            if not token:
                break
    return items


async def inventory(endpoints: Mapping[str, tuple[str, str]], identity: ClientIdentity) -> list[dict[str, Any]]:
    """One section per source whose service runs (`endpoints`: service -> (target, SPIFFE ID)): its items, or
    the error that kept the auditor from them."""
    sections = []
    for source in SOURCES:
        if source.service not in endpoints:
            continue
        try:
            items, error = await read(source, *endpoints[source.service], identity), ""
        except grpc.aio.AioRpcError as exc:
            items, error = [], f"{exc.code().name}: {exc.details()}"
        sections.append({"service": source.service, "method": source.method.rsplit(".", 1)[1],
                         "title": source.title, "items": items, "error": error})
    return sections


def cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def spending(ledger: list[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """Cumulative rho charged over time per "analyst @ dataset" (the chart's series)."""
    series: dict[str, list[tuple[str, float]]] = {}
    for entry in sorted(ledger, key=lambda e: e.get("time", "")):
        charged = float(entry.get("charged", {}).get("rho", 0.0))
        if not charged:
            continue
        name = f"{entry.get('analyst', '')} @ {entry.get('dataset', '')}"
        points = series.setdefault(name, [])
        points.append((entry.get("time", ""), (points[-1][1] if points else 0.0) + charged))
    return series
