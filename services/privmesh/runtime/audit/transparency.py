"""The transparency part of an evidence bundle: each log's tree checkpoints with their cosignatures and the
consistency proofs between them, and what each service holds as a witness of the others; and its offline
check: tree roots recomputed from the entries, log signatures, consistency, cosignatures by pinned peers,
split views (a witness cosigned a root the log's own entries do not give) and forks refused by witnesses.

Export reads every witness's state before any log, so an honest log is never behind what was cosigned.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.chain import Finding
from privmesh.runtime.audit.merkle import Frontier, leaf_hash, verify_consistency

PAGE = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def export_witnessed(stub: common_pb2_grpc.AuditLogStub) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What the service holds as a witness, and its current witness key with the endorsement of it."""
    reply = await stub.ListWitnessedCheckpoints(common_pb2.ListWitnessedCheckpointsRequest())
    key = {"public_key": _b64(reply.witness_public_key),
           "certificate_chain": reply.witness_key_endorsement.certificate_chain,
           "key_endorsement": _b64(reply.witness_key_endorsement.signature)}
    return [{"origin": w.origin, "log_public_key": _b64(w.log_public_key), "latest_checkpoint": w.latest_checkpoint,
             "refused_checkpoints": list(w.refused_checkpoints)} for w in reply.logs], key


async def export_tree(stub: common_pb2_grpc.AuditLogStub, covered: int) -> dict[str, Any]:
    """The tree checkpoints of sizes up to `covered` and the consistency proof between each two in a row."""
    checkpoints: list[str] = []
    token = ""
    while len(checkpoints) <= covered:  # distinct sizes 0..covered: bounded whatever the server answers
        page = await stub.ListTreeCheckpoints(common_pb2.ListTreeCheckpointsRequest(page_size=PAGE, page_token=token))
        checkpoints += page.checkpoints
        token = page.next_page_token
        if not token or not page.checkpoints or (_size(page.checkpoints[-1]) or 0) >= covered:
            break
    kept = [c for c in checkpoints if (_size(c) or 0) <= covered]  # a malformed one is kept: verify names it
    sizes = sorted({size for c in kept if (size := _size(c))})
    proofs = []
    for first, second in itertools.pairwise(sizes):
        if first:
            reply = await stub.GetConsistencyProof(common_pb2.GetConsistencyProofRequest(first_size=first,
                                                                                         second_size=second))
            proofs.append({"first": first, "second": second, "proof": [_b64(h) for h in reply.proof]})
    return {"checkpoints": kept, "consistency": proofs}


def _size(note: str) -> int | None:
    parsed = _parsed(note)
    return None if parsed is None else parsed[1].size


def _roots(entry_hashes: Sequence[bytes], sizes: set[int]) -> dict[int, bytes]:
    frontier = Frontier()
    roots = {0: frontier.root()} if 0 in sizes else {}
    for entry_hash in entry_hashes:
        frontier.append(leaf_hash(entry_hash))
        if frontier.size in sizes:
            roots[frontier.size] = frontier.root()
    return roots


def _parsed(note: str) -> tuple[notes.Note, notes.TreeHead] | None:
    try:
        parsed = notes.parse_note(note)
        return parsed, notes.parse_checkpoint(parsed.text)
    except notes.NoteError:
        return None


def verify_tree(service: str, tree: Mapping[str, Any], entry_hashes: Sequence[bytes],
                keys: Mapping[str, Ed25519PublicKey], witnessed: Mapping[str, Sequence[Mapping[str, Any]]],
                trust_domain: str, min_witnesses: int, earlier: Mapping[str, Any] | None = None,
                witness_keys: Mapping[str, Sequence[Ed25519PublicKey]] | None = None) -> Finding | None:
    """The first problem with `service`'s tree evidence, or None. `keys` holds only pinned keys (by service),
    `witnessed` what each other service holds as a witness, `earlier` the service's tree from an older bundle,
    `witness_keys` the accepted cosigning keys by service (default: each service's key in `keys`)."""
    origin, key = notes.log_origin(trust_domain, service), keys[service]
    parsed = [(_parsed(n), n) for n in tree.get("checkpoints", [])]
    if any(p is None for p, _ in parsed):
        return Finding(0, "a tree checkpoint is malformed")
    heads = [(p[0], p[1]) for p, _ in parsed if p is not None]
    foreign = [h for w, held in witnessed.items() if w != service for h in held if h["origin"] == origin]
    held_notes = [_parsed(h["latest_checkpoint"]) for h in foreign]
    earlier_heads = [p[1] for p in (_parsed(n) for n in (earlier or {}).get("checkpoints", [])) if p is not None]
    sizes = {h.size for _, h in heads} | {p[1].size for p in held_notes if p} | {h.size for h in earlier_heads}
    roots = _roots(entry_hashes, sizes)
    last_good = 0
    for note, head in heads:
        label = f"tree checkpoint at size {head.size}"
        if head.origin != origin or not notes.signed_by(note, origin, key):
            return Finding(0, f"{label} is not signed by {origin}'s pinned key")
        if head.size not in roots:
            return Finding(len(entry_hashes) + 1, f"{label} covers more entries than the bundle holds")
        if roots[head.size] != head.root:
            return Finding(last_good + 1, f"{label} does not match the tree of the entries: they were rewritten "
                                          f"somewhere in {last_good + 1}..{head.size}")
        last_good = head.size
    by_size = {h.size: h for _, h in heads}
    for item in tree.get("consistency", []):
        first, second = by_size.get(item["first"]), by_size.get(item["second"])
        proof = [base64.b64decode(h) for h in item["proof"]]
        if first is None or second is None or not verify_consistency(first.size, second.size, first.root,
                                                                      second.root, proof):
            return Finding(0, f"tree checkpoint at size {item['second']} is not consistent with the one at "
                              f"{item['first']}")
    for parsed_held in held_notes:
        if parsed_held is None or not notes.signed_by(parsed_held[0], origin, key):
            continue  # a witness holding something the pinned key did not sign says nothing about this log
        head = parsed_held[1]
        if head.size > len(entry_hashes) or roots.get(head.size) != head.root:
            return Finding(0, f"split view: a witness cosigned {origin} at size {head.size} with root "
                              f"{_b64(head.root)}, which this log's entries do not give: the log was forked")
    for held in foreign:
        for refused in held["refused_checkpoints"]:
            parsed_refused = _parsed(refused)
            if parsed_refused is not None and notes.signed_by(parsed_refused[0], origin, key):
                return Finding(0, f"fork: {origin}'s key signed a checkpoint of size {parsed_refused[1].size} that a "
                                  "witness refused as inconsistent with what it had cosigned")
    for head in earlier_heads:
        if roots.get(head.size) != head.root:
            return Finding(0, f"inconsistent with the earlier bundle: its tree checkpoint at size {head.size} is not "
                              "the tree of this bundle's entries")
    if heads and min_witnesses:
        note = heads[-1][0]
        cosigners = witness_keys if witness_keys is not None else {w: [k] for w, k in keys.items()}
        cosigned = [w for w, ks in cosigners.items() if w != service and any(
            notes.cosigned_at(note, notes.witness_name(trust_domain, w), k) is not None for k in ks)]
        if len(cosigned) < min_witnesses:
            return Finding(0, f"the latest tree checkpoint (size {heads[-1][1].size}) has {len(cosigned)} pinned "
                              f"witness cosignatures, {min_witnesses} required")
    return None


def tree_findings(bundle: Mapping[str, Any], pinned: Mapping[str, bytes], trust_domain: str, min_witnesses: int,
                  since: Mapping[str, Any] | None = None,
                  witness_keys: Mapping[str, bytes] | None = None) -> dict[str, Finding]:
    """verify_tree for every service whose chain and key already verified (`pinned`: service -> raw key); a
    service's cosignatures count under its audit key or its accepted witness key (`witness_keys`)."""
    keys = {service: Ed25519PublicKey.from_public_bytes(raw) for service, raw in pinned.items()}
    cosigners = {service: [key, *([Ed25519PublicKey.from_public_bytes(witness_keys[service])]
                                  if service in (witness_keys or {}) else [])] for service, key in keys.items()}
    witnessed = bundle.get("witnessed", {})
    earlier = {s["service"]: s.get("tree") for s in (since or {}).get("services", [])}
    findings = {}
    for section in bundle["services"]:
        service = section["service"]
        if service not in keys:
            continue
        if "tree" not in section:
            findings[service] = Finding(0, "the bundle carries no tree evidence for this log")
            continue
        hashes = [base64.b64decode(e.get("entryHash", "")) for e in section["entries"]]
        finding = verify_tree(service, section["tree"], hashes, keys, witnessed, trust_domain,
                              min(min_witnesses, len(keys) - 1), earlier.get(service), cosigners)
        if finding is not None:
            findings[service] = finding
    return findings
