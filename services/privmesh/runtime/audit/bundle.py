"""Evidence bundles: the audit logs and signed heads of every service in one JSON file, verifiable offline.

Export reads each service's head first and then exactly the entries it covers, so a bundle is consistent
even while the services keep writing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit.chain import Finding, verify_log
from privmesh.runtime.audit.servicer import checkpoint_from_proto, entry_from_proto
from privmesh.runtime.audit.transparency import export_tree, export_witnessed, tree_findings
from privmesh.runtime.client import ClientIdentity, secure_channel

FORMAT = "privmesh-evidence/1"
PAGE = 1000


async def export_service(target: str, identity: ClientIdentity) -> dict[str, Any]:
    async with secure_channel(target, identity, timeout_seconds=30) as channel:
        stub = common_pb2_grpc.AuditLogStub(channel)
        head = await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())
        entries: list[common_pb2.AuditEntry] = []
        token = ""
        while len(entries) < head.head.sequence:
            page = await stub.ListAuditEntries(common_pb2.ListAuditEntriesRequest(page_size=PAGE, page_token=token))
            entries += page.entries
            token = page.next_page_token
            if not token:
                break
        checkpoints: list[common_pb2.AuditCheckpoint] = []
        token = ""
        while True:
            more = await stub.ListAuditCheckpoints(common_pb2.ListAuditCheckpointsRequest(page_size=PAGE,
                                                                                          page_token=token))
            checkpoints += more.checkpoints
            token = more.next_page_token
            if not token:
                break
        tree = await export_tree(stub, head.head.sequence)
    covered = head.head.sequence
    return {
        "service": head.head.service,
        "endpoint": target,
        "public_key": base64.b64encode(head.public_key).decode(),
        "head": json_format.MessageToDict(head.head),
        "checkpoints": [json_format.MessageToDict(c) for c in checkpoints if c.sequence <= covered],
        "entries": [json_format.MessageToDict(e) for e in entries[:covered]],
        "tree": tree,
    }


async def export_bundle(targets: Mapping[str, str], identity: ClientIdentity) -> dict[str, Any]:
    witnessed = {}
    for service, target in targets.items():  # witnesses first: no log is then behind what was cosigned
        async with secure_channel(target, identity, timeout_seconds=30) as channel:
            witnessed[service] = await export_witnessed(common_pb2_grpc.AuditLogStub(channel))
    services = [await export_service(target, identity) for target in targets.values()]
    return {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(), "services": services,
            "witnessed": witnessed}


@dataclass(frozen=True)
class ServiceVerdict:
    service: str
    entries: int
    key_id: str
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


def verify_bundle(bundle: Mapping[str, Any], trusted_keys: Mapping[str, str] | None = None, *,
                  trust_domain: str = "privmesh.local", min_witnesses: int = 1,
                  since: Mapping[str, Any] | None = None) -> list[ServiceVerdict]:
    verdicts = _verify_chains(bundle, trusted_keys)
    pinned = {v.service: base64.b64decode(s["public_key"])
              for v, s in zip(verdicts, bundle["services"], strict=True) if v.ok}
    found = tree_findings(bundle, pinned, trust_domain, min_witnesses, since)
    return [replace(v, finding=found[v.service]) if v.service in found else v for v in verdicts]


def _verify_chains(bundle: Mapping[str, Any], trusted_keys: Mapping[str, str] | None = None) -> list[ServiceVerdict]:
    """Verifies every service's chain against its signed head. With `trusted_keys` (service -> key id),
    a log signed by any other key fails: without it, the keys in the bundle are taken at their word."""
    if bundle.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} bundle")
    verdicts = []
    for section in bundle["services"]:
        service = section["service"]
        raw_key = base64.b64decode(section["public_key"])
        key_id = hashlib.sha256(raw_key).hexdigest()
        if trusted_keys is not None and trusted_keys.get(service) != key_id:
            verdicts.append(ServiceVerdict(service, len(section["entries"]), key_id,
                                           Finding(0, f"audit key {key_id[:16]}... is not the trusted key")))
            continue
        public_key = Ed25519PublicKey.from_public_bytes(raw_key)
        entries = [entry_from_proto(json_format.ParseDict(e, common_pb2.AuditEntry())) for e in section["entries"]]
        checkpoints = [checkpoint_from_proto(json_format.ParseDict(c, common_pb2.AuditCheckpoint()))
                       for c in section["checkpoints"]]
        head = checkpoint_from_proto(json_format.ParseDict(section["head"], common_pb2.AuditCheckpoint()))
        verdicts.append(ServiceVerdict(service, len(entries), key_id,
                                       verify_log(service, entries, checkpoints, head, public_key)))
    return verdicts
