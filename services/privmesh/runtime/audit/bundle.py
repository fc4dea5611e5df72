"""Evidence bundles: the audit logs and signed heads of every service in one JSON file, verifiable offline
against keys the auditor pins (key ids, or the mesh CA that endorses each service's audit key), never against
the keys the bundle carries alone.

Export reads each service's head first and then exactly the entries it covers, so a bundle is consistent
even while the services keep writing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit.chain import Checkpoint, Entry, Finding, verify_log
from privmesh.runtime.audit.servicer import checkpoint_from_proto, entry_from_proto
from privmesh.runtime.audit.transparency import export_tree, export_witnessed, tree_findings
from privmesh.runtime.audit.trust import Trust, key_problem
from privmesh.runtime.client import ClientIdentity, secure_channel

FORMAT = "privmesh-evidence/1"
PAGE = 1000


async def export_service(target: str, identity: ClientIdentity, peer: str) -> dict[str, Any]:
    async with secure_channel(target, identity, timeout_seconds=30, peer=peer) as channel:
        stub = common_pb2_grpc.AuditLogStub(channel)
        head = await stub.GetAuditHead(common_pb2.GetAuditHeadRequest())
        covered = head.head.sequence
        # Paging stops at an empty page, so each page adds at least one item, and at what the head covers: at
        # most `covered` + 1 pages each, whatever the server answers.
        entries: list[common_pb2.AuditEntry] = []
        token = ""
        while len(entries) < covered:
            page = await stub.ListAuditEntries(common_pb2.ListAuditEntriesRequest(page_size=PAGE, page_token=token))
            entries += page.entries
            token = page.next_page_token
            if not token or not page.entries:
                break
        checkpoints: list[common_pb2.AuditCheckpoint] = []
        token = ""
        while len(checkpoints) <= covered:  # checkpoints have distinct sequences, listed in ascending order
            more = await stub.ListAuditCheckpoints(common_pb2.ListAuditCheckpointsRequest(page_size=PAGE,
                                                                                          page_token=token))
            checkpoints += more.checkpoints
            token = more.next_page_token
            if not token or not more.checkpoints or more.checkpoints[-1].sequence >= covered:
                break
        tree = await export_tree(stub, covered)
    return {
        "service": head.head.service,
        "endpoint": target,
        "public_key": base64.b64encode(head.public_key).decode(),
        "certificate_chain": head.certificate_chain,
        "key_endorsement": base64.b64encode(head.key_endorsement).decode(),
        "head": json_format.MessageToDict(head.head),
        "checkpoints": [json_format.MessageToDict(c) for c in checkpoints if c.sequence <= covered],
        "entries": [json_format.MessageToDict(e) for e in entries[:covered]],
        "tree": tree,
    }


async def export_bundle(endpoints: Mapping[str, tuple[str, str]], identity: ClientIdentity) -> dict[str, Any]:
    """Every service's log; `endpoints` maps each service to its (target, pinned SPIFFE ID)."""
    witnessed, witness_keys = {}, {}
    for service, (target, peer) in endpoints.items():  # witnesses first: no log is then behind what was cosigned
        async with secure_channel(target, identity, timeout_seconds=30, peer=peer) as channel:
            witnessed[service], witness_keys[service] = await export_witnessed(common_pb2_grpc.AuditLogStub(channel))
    services = [await export_service(target, identity, peer) for target, peer in endpoints.values()]
    return {"format": FORMAT, "created": dt.datetime.now(dt.timezone.utc).isoformat(), "services": services,
            "witnessed": witnessed, "witness_keys": witness_keys}


@dataclass(frozen=True)
class ServiceVerdict:
    service: str
    entries: int
    key_id: str
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


class NoTrustAnchor(ValueError):
    """Verification was asked for with nothing pinned: a bundle's own keys prove nothing."""


def _head(section: Mapping[str, Any]) -> Checkpoint:
    return checkpoint_from_proto(json_format.ParseDict(section["head"], common_pb2.AuditCheckpoint()))


def _key_finding(section: Mapping[str, Any], raw_key: bytes, head: Checkpoint, trust: Trust) -> Finding | None:
    """Why the section's audit key is not the pinned (or CA-endorsed) key of its service, or None."""
    at = dt.datetime.fromtimestamp(head.time_us / 1e6, dt.timezone.utc)
    problem = key_problem(trust, section["service"], raw_key, section.get("certificate_chain", ""),
                          base64.b64decode(section.get("key_endorsement", "")), at)
    return None if problem is None else Finding(0, f"audit {problem}")


def _since_finding(entries: Sequence[Entry], head: Checkpoint, seen: Checkpoint) -> Finding | None:
    """Why this log is not a continuation of the head seen in an earlier bundle, or None."""
    if head.sequence < seen.sequence:
        return Finding(0, f"head at {head.sequence} is older than the head at {seen.sequence} of the earlier bundle")
    if seen.sequence and entries[seen.sequence - 1].entry_hash != seen.head_hash:
        return Finding(seen.sequence, f"entries up to {seen.sequence} differ from the earlier bundle's: "
                                      "the log was rewritten since")
    return None


def verify_bundle(bundle: Mapping[str, Any], trust: Trust, expected: Iterable[str] = (),
                  since: Mapping[str, Any] | None = None, min_witnesses: int = 1) -> list[ServiceVerdict]:
    """_verify_chains, then each verified log's tree evidence (transparency.tree_findings): checkpoints,
    consistency, at least `min_witnesses` pinned cosignatures, no split view or refused fork."""
    verdicts = _verify_chains(bundle, trust, expected, since)
    sections = {s["service"]: s for s in reversed(bundle["services"])}
    pinned = {v.service: base64.b64decode(sections[v.service]["public_key"])
              for v in verdicts if v.ok and v.service in sections}
    found = tree_findings(bundle, pinned, trust.trust_domain, min_witnesses, since, _witness_keys(bundle, trust))
    return [replace(v, finding=found[v.service]) if v.service in found else v for v in verdicts]


def _witness_keys(bundle: Mapping[str, Any], trust: Trust) -> dict[str, bytes]:
    """Each service's current witness key (when it has one apart from its audit key) that `trust` accepts."""
    created = dt.datetime.fromisoformat(bundle.get("created", dt.datetime.now(dt.timezone.utc).isoformat()))
    accepted = {}
    for service, key in bundle.get("witness_keys", {}).items():
        raw = base64.b64decode(key.get("public_key", ""))
        if len(raw) == 32 and key_problem(trust, service, raw, key.get("certificate_chain", ""),
                                          base64.b64decode(key.get("key_endorsement", "")), created) is None:
            accepted[service] = raw
    return accepted


def _verify_chains(bundle: Mapping[str, Any], trust: Trust, expected: Iterable[str] = (),
                   since: Mapping[str, Any] | None = None) -> list[ServiceVerdict]:
    """Verifies every service's chain against its signed head and its key against what `trust` pins; every
    `expected` service (and every service of the earlier bundle `since`) must be present, with a head no older
    than the earlier one and the same entries up to it. Raises NoTrustAnchor when `trust` pins nothing."""
    if not trust.keys and not trust.roots:
        raise NoTrustAnchor("no pinned audit keys: give the trusted key ids or the mesh CA that endorses them; "
                            "the keys a bundle carries prove nothing on their own")
    for data in (bundle, since):
        if data is not None and data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} bundle")
    seen = {s["service"]: _head(s) for s in (since or {}).get("services", [])}
    verdicts: list[ServiceVerdict] = []
    present: set[str] = set()
    for section in bundle["services"]:
        service = section["service"]
        raw_key = base64.b64decode(section["public_key"])
        key_id = hashlib.sha256(raw_key).hexdigest()
        entries = [entry_from_proto(json_format.ParseDict(e, common_pb2.AuditEntry())) for e in section["entries"]]
        if service in present:
            verdicts.append(ServiceVerdict(service, len(entries), key_id, Finding(0, "appears twice in the bundle")))
            continue
        present.add(service)
        head = _head(section)
        finding = _key_finding(section, raw_key, head, trust)
        if finding is None:
            checkpoints = [checkpoint_from_proto(json_format.ParseDict(c, common_pb2.AuditCheckpoint()))
                           for c in section["checkpoints"]]
            finding = verify_log(service, entries, checkpoints, head, Ed25519PublicKey.from_public_bytes(raw_key))
        if finding is None and service in seen:
            finding = _since_finding(entries, head, seen[service])
        verdicts.append(ServiceVerdict(service, len(entries), key_id, finding))
    for service in sorted({*expected, *seen} - present):
        why = "was in the earlier bundle" if service in seen else "is expected"
        verdicts.append(ServiceVerdict(service, 0, "", Finding(0, f"missing from the bundle (it {why})")))
    return verdicts
