"""Receipts: one entry, a checkpoint that includes it and the inclusion proof, checked offline.

A receipt verifies against what the holder pins (key ids per service, as `evidence verify --trust` takes them,
or the mesh CA, as `--ca`: each key the receipt carries comes with its service's endorsement), never against
the keys it carries alone: the log's signature proves the service committed to the entry, each accepted
witness's cosignature that the service showed that same tree to another party. A witness's key is the one
whose key ID its cosignature line names, so checkpoints cosigned before and after a witness key rotation
both verify while the holder accepts both keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format

from privmesh.common.v1 import common_pb2, common_pb2_grpc
from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.chain import Event, entry_hash
from privmesh.runtime.audit.merkle import leaf_hash, verify_inclusion
from privmesh.runtime.audit.servicer import entry_from_proto
from privmesh.runtime.audit.trust import Trust, key_problem
from privmesh.runtime.client import ClientIdentity, secure_channel

FORMAT = "privmesh-receipt/1"


async def fetch_receipt(target: str, identity: ClientIdentity, peer: str,
                        sequence: int = 0) -> common_pb2.AuditReceipt:
    async with secure_channel(target, identity, timeout_seconds=30, peer=peer) as channel:
        stub = common_pb2_grpc.AuditLogStub(channel)
        reply: common_pb2.GetAuditReceiptResponse = await stub.GetAuditReceipt(
            common_pb2.GetAuditReceiptRequest(sequence=sequence))
        return reply.receipt


def to_json(receipt: common_pb2.AuditReceipt) -> dict[str, Any]:
    return {"format": FORMAT, "receipt": json_format.MessageToDict(receipt)}


@dataclass(frozen=True)
class ReceiptVerdict:
    service: str
    sequence: int
    size: int
    witnesses: tuple[str, ...]
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _accepted_key(receipt: common_pb2.AuditReceipt, service: str, trust: Trust,
                  at: dt.datetime) -> tuple[Ed25519PublicKey | None, str]:
    """The receipt's key for `service` if `trust` accepts it (else None), and why not."""
    raw = receipt.public_keys.get(service)
    if raw is None or len(raw) != 32:
        return None, f"the receipt carries no key for {service}"
    endorsement = receipt.endorsements.get(service, common_pb2.KeyEndorsement())
    problem = key_problem(trust, service, raw, endorsement.certificate_chain, endorsement.signature, at)
    return (None, f"{service}'s {problem}") if problem else (Ed25519PublicKey.from_public_bytes(raw), "")


def verify_receipt(data: Mapping[str, Any], trust: Trust, min_witnesses: int = 1) -> ReceiptVerdict:
    """Checks the entry's hash, the log's signature on the checkpoint under an accepted key, the inclusion
    proof, and that at least `min_witnesses` other services cosigned the checkpoint with accepted keys."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} receipt")
    receipt = json_format.ParseDict(data["receipt"], common_pb2.AuditReceipt())
    entry = entry_from_proto(receipt.entry)
    service, sequence, trust_domain = entry.service, entry.sequence, trust.trust_domain

    def verdict(problem: str | None, size: int = 0, witnesses: tuple[str, ...] = ()) -> ReceiptVerdict:
        return ReceiptVerdict(service, sequence, size, witnesses, problem)

    recomputed = entry_hash(entry.sequence, entry.time_us, Event(entry.service, entry.principal, entry.operation,
                            entry.resource, entry.outcome, entry.details), entry.previous_hash)
    if recomputed != entry.entry_hash:
        return verdict("the entry does not match its hash: it was modified")
    if receipt.leaf_index != sequence - 1:
        return verdict(f"leaf index {receipt.leaf_index} is not the entry's position {sequence - 1}")
    written = dt.datetime.fromtimestamp(entry.time_us / 1e6, dt.timezone.utc)
    log_key, why = _accepted_key(receipt, service, trust, written)
    if log_key is None:
        return verdict(f"the log key is not accepted: {why}")
    try:
        note = notes.parse_note(receipt.checkpoint)
        head = notes.parse_checkpoint(note.text)
    except notes.NoteError as exc:
        return verdict(f"the checkpoint is malformed: {exc}")
    origin = notes.log_origin(trust_domain, service)
    if head.origin != origin or not notes.signed_by(note, origin, log_key):
        return verdict(f"the checkpoint is not signed by {origin}'s accepted key", head.size)
    if not verify_inclusion(receipt.leaf_index, head.size, leaf_hash(entry.entry_hash),
                            list(receipt.inclusion_proof), head.root):
        return verdict(f"the inclusion proof does not lead to the checkpoint's root at size {head.size}", head.size)
    witnesses = []
    for witness in sorted(set(receipt.public_keys) - {service}):
        raw = receipt.public_keys[witness]
        if len(raw) != 32:
            continue
        name = notes.witness_name(trust_domain, witness)
        cosigned = notes.cosigned_at(note, name, Ed25519PublicKey.from_public_bytes(raw))
        if cosigned is None:
            continue
        key, _ = _accepted_key(receipt, witness, trust, dt.datetime.fromtimestamp(cosigned, dt.timezone.utc))
        if key is not None:
            witnesses.append(witness)
    if len(witnesses) < min_witnesses:
        return verdict(f"{len(witnesses)} accepted witnesses cosigned the checkpoint, {min_witnesses} required",
                       head.size, tuple(witnesses))
    return verdict(None, head.size, tuple(witnesses))
