"""What the console shows of each service's own state, read through the services' gRPC APIs as the auditor:
keys with their key policies and rotation, token fields with who may detokenize them, datasets with every
analyst's budget and the ledger, federations with their runs, attestation policies with recent verdicts, FHE
models. Calls are built from the generated descriptors, so a section is one table per method; a section that
depends on another (runs per federation, a budget per ledger analyst) is read from that section's items."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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
MAX_FANOUT = 200  # dependent calls per section (a budget per analyst, runs per federation)


@dataclass(frozen=True)
class Source:
    service: str
    method: str  # full name, e.g. "privmesh.keybroker.v1.KeyBroker.ListKeys"
    title: str
    page: str  # the console page that shows it
    request: tuple[tuple[str, str], ...] = ()  # fields every request sets


SOURCES = (
    Source("key-broker", "privmesh.keybroker.v1.KeyBroker.ListKeys", "keys, policies and rotation", "keys"),
    Source("token-vault", "privmesh.tokenvault.v1.TokenVault.ListFields", "token fields and who may detokenize",
           "tokens", (("parent", "tenants/-"),)),
    Source("dp-gateway", "privmesh.dpgateway.v1.DPGateway.ListDatasets", "datasets", "budgets"),
    Source("dp-gateway", "privmesh.dpgateway.v1.DPGateway.ListLedger", "privacy-budget ledger", "budgets"),
    Source("fl-coordinator", "privmesh.fl.v1.FLCoordinator.ListFederations", "federations", "federations"),
    Source("attestation-verifier", "privmesh.attestation.v1.AttestationVerifier.ListPolicies",
           "attestation policies", "attestation"),
    Source("attestation-verifier", "privmesh.attestation.v1.AttestationVerifier.ListVerificationResults",
           "recent verdicts", "attestation"),
    Source("fhe-inference", "privmesh.fhe.v1.FHEInference.ListModels", "FHE models", "models"),
)
# Per-item reads: a key's policy, an analyst's budget on a dataset, a federation's runs.
KEY_POLICY = "privmesh.keybroker.v1.KeyBroker.GetKeyPolicy"
BUDGET = "privmesh.dpgateway.v1.DPGateway.GetBudget"
RUNS = "privmesh.fl.v1.FLCoordinator.ListRuns"
PAGES = {"keys": "Keys", "tokens": "Token fields", "budgets": "Privacy budgets", "federations": "Federations",
         "attestation": "Attestation", "models": "FHE models"}


def _path(full_name: str) -> str:
    service, method = full_name.rsplit(".", 1)
    return f"/{service}/{method}"


METHODS = tuple(_path(m)[1:] for m in (*(s.method for s in SOURCES), KEY_POLICY, BUDGET, RUNS))  # as rules name them
# The read-only views the auditor needs: other analysts' ledger entries and budgets.
AUDITOR_VIEWS = ("datasets/*:analysts",)


class Reader:
    """One mTLS channel per service, calls built from the descriptors (unary only)."""

    def __init__(self, endpoints: Mapping[str, tuple[str, str]], identity: ClientIdentity) -> None:
        self.endpoints = endpoints
        self.identity = identity

    async def call(self, service: str, full_name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        return (await self.calls(service, full_name, [request]))[0]

    async def calls(self, service: str, full_name: str, requests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        method = descriptor_pool.Default().FindMethodByName(full_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        target, peer = self.endpoints[service]
        replies = []
        async with secure_channel(target, self.identity, timeout_seconds=10, peer=peer) as channel:
            stub: Any = channel.unary_unary(_path(full_name), request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_class.FromString)
            for request in requests:
                reply = await stub(json_format.ParseDict(dict(request), request_class()))
                replies.append(json_format.MessageToDict(reply))
        return replies

    async def list(self, service: str, full_name: str, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every item the List method returns (following page tokens), as JSON objects."""
        method = descriptor_pool.Default().FindMethodByName(full_name)
        items_field = next(f for f in method.output_type.fields if f.label == f.LABEL_REPEATED)
        items: list[dict[str, Any]] = []
        token = ""
        for _ in range(MAX_PAGES):
            reply = await self.call(service, full_name, {**request, "pageToken": token} if token else request)
            items += reply.get(items_field.json_name, [])
            token = reply.get("nextPageToken", "")
            if not token:
                break
        return items


async def _enrich(reader: Reader, source: Source, items: list[dict[str, Any]]) -> None:
    """Adds what one List call lacks: key policies, who may detokenize, budgets, runs."""
    if source.method.endswith(".ListKeys"):
        policies = await reader.calls(source.service, KEY_POLICY, [{"key": k["name"]} for k in items[:MAX_FANOUT]])
        for key, reply in zip(items, policies, strict=False):
            key["policy"] = "; ".join(_statement(s) for s in reply.get("policy", {}).get("statements", []))
    elif source.method.endswith(".ListFields"):
        for field in items:
            rules = field.get("detokenizePolicy", {}).get("rules", [])
            field["mayDetokenize"] = "; ".join(
                f"{', '.join(r.get('principals', []))}: {r.get('view', '').removeprefix('DETOKENIZE_VIEW_')}"
                for r in rules) or "nobody"
    elif source.method.endswith(".ListFederations"):
        for federation in items[:MAX_FANOUT]:
            runs = await reader.list(source.service, RUNS, {"parent": federation["name"]})
            federation["runs"] = [{k: r.get(k) for k in ("name", "state", "completedRounds", "totalRounds")}
                                  for r in runs]


async def budgets(reader: Reader, ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (dataset, analyst) of the ledger's budget as GetBudget returns it: cap, spent, reserved."""
    pairs = sorted({(e.get("dataset", ""), e.get("analyst", "")) for e in ledger if e.get("dataset")})[:MAX_FANOUT]
    replies = await reader.calls("dp-gateway", BUDGET, [{"dataset": d, "analyst": a or "*"} for d, a in pairs])
    return [r.get("budget", {}) for r in replies]


async def inventory(endpoints: Mapping[str, tuple[str, str]], identity: ClientIdentity,
                    page: str | None = None) -> list[dict[str, Any]]:
    """One section per source whose service runs (`endpoints`: service -> (target, SPIFFE ID)), of `page` if
    given: its items, or the error that kept the auditor from them."""
    reader = Reader(endpoints, identity)
    sections = []
    for source in SOURCES:
        if source.service not in endpoints or page not in (None, source.page):
            continue
        try:
            items = await reader.list(source.service, source.method, dict(source.request))
            await _enrich(reader, source, items)
            error = ""
        except grpc.aio.AioRpcError as exc:
            items, error = [], f"{exc.code().name}: {exc.details()}"
        sections.append({"service": source.service, "method": source.method.rsplit(".", 1)[1], "page": source.page,
                         "title": source.title, "items": items, "error": error})
        if source.method.endswith(".ListLedger") and not error:
            try:
                found, error = await budgets(reader, items), ""
            except grpc.aio.AioRpcError as exc:
                found, error = [], f"{exc.code().name}: {exc.details()}"
            sections.append({"service": source.service, "method": "GetBudget", "page": source.page,
                             "title": "budgets per analyst and dataset", "items": found, "error": error})
    return sections


def _statement(statement: Mapping[str, Any]) -> str:
    operations = ",".join(o.removeprefix("KEY_OPERATION_") for o in statement.get("operations", []))
    effect = statement.get("effect", "").removeprefix("POLICY_EFFECT_")
    return f"{statement.get('sid', '')}: {effect} {', '.join(statement.get('principals', []))} [{operations}]"


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
