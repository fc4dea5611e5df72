"""Receipts: one entry, a checkpoint that includes it and the inclusion proof, checked offline.

A receipt verifies against keys the holder pins (audit key ids per service, as `evidence verify --trust`
takes them), never against the keys it carries alone: the log's signature proves the service committed
to the entry, each pinned witness's cosignature that the service showed that same tree to another party.
"""

from __future__ import annotations

import hashlib
import hmac
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
from privmesh.runtime.client import ClientIdentity, secure_channel

FORMAT = "privmesh-receipt/1"


async def fetch_receipt(target: str, identity: ClientIdentity, peer: str,
                        sequence: int = 0) -> common_pb2.AuditReceipt:
    async with secure_channel(target, identity, timeout_seconds=30, peer=peer) as channel:
        stub = common_pb2_grpc.AuditLogStub(channel)
        return (await stub.GetAuditReceipt(common_pb2.GetAuditReceiptRequest(sequence=sequence))).receipt


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


def _pinned_key(receipt: common_pb2.AuditReceipt, service: str, trusted: Mapping[str, str]) -> Ed25519PublicKey | None:
    raw = receipt.public_keys.get(service)
    if raw is None or service not in trusted or len(raw) != 32:
        return None
    if not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), trusted[service]):
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_receipt(data: Mapping[str, Any], trusted: Mapping[str, str], trust_domain: str = "privmesh.local",
                   min_witnesses: int = 1) -> ReceiptVerdict:
    """Checks the entry's hash, the log's signature on the checkpoint under the pinned key, the inclusion
    proof, and that at least `min_witnesses` pinned other services cosigned the checkpoint."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} receipt")
    receipt = json_format.ParseDict(data["receipt"], common_pb2.AuditReceipt())
    entry = entry_from_proto(receipt.entry)
    service, sequence = entry.service, entry.sequence

    def verdict(problem: str | None, size: int = 0, witnesses: tuple[str, ...] = ()) -> ReceiptVerdict:
        return ReceiptVerdict(service, sequence, size, witnesses, problem)

    recomputed = entry_hash(entry.sequence, entry.time_us, Event(entry.service, entry.principal, entry.operation,
                            entry.resource, entry.outcome, entry.details), entry.previous_hash)
    if recomputed != entry.entry_hash:
        return verdict("the entry does not match its hash: it was modified")
    if receipt.leaf_index != sequence - 1:
        return verdict(f"leaf index {receipt.leaf_index} is not the entry's position {sequence - 1}")
    log_key = _pinned_key(receipt, service, trusted)
    if log_key is None:
        return verdict(f"the receipt's key for {service} is not the pinned audit key")
    try:
        note = notes.parse_note(receipt.checkpoint)
        head = notes.parse_checkpoint(note.text)
    except notes.NoteError as exc:
        return verdict(f"the checkpoint is malformed: {exc}")
    origin = notes.log_origin(trust_domain, service)
    if head.origin != origin or not notes.signed_by(note, origin, log_key):
        return verdict(f"the checkpoint is not signed by {origin}'s pinned key", head.size)
    if not verify_inclusion(receipt.leaf_index, head.size, leaf_hash(entry.entry_hash),
                            list(receipt.inclusion_proof), head.root):
        return verdict(f"the inclusion proof does not lead to the checkpoint's root at size {head.size}", head.size)
    witnesses = []
    for witness in sorted(set(trusted) - {service}):
        key = _pinned_key(receipt, witness, trusted)
        if key is not None and notes.cosigned_at(note, notes.witness_name(trust_domain, witness), key) is not None:
            witnesses.append(witness)
    if len(witnesses) < min_witnesses:
        return verdict(f"{len(witnesses)} pinned witnesses cosigned the checkpoint, {min_witnesses} required",
                       head.size, tuple(witnesses))
    return verdict(None, head.size, tuple(witnesses))

