"""The chain's rules, shared by the writer and the offline verifier: canonical encodings, hashes, signatures.

The encodings are specified in protos/privmesh/common/v1/common.proto so that an auditor can re-implement
verification in any language.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = bytes(32)
OUTCOMES = ("SUCCESS", "DENIED", "FAILURE")


@dataclass(frozen=True)
class Event:
    """What an operation asks to record."""

    service: str
    principal: str
    operation: str
    resource: str = ""
    outcome: str = "SUCCESS"
    details: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    sequence: int
    time_us: int
    service: str
    principal: str
    operation: str
    resource: str
    outcome: str
    details: Mapping[str, str]
    previous_hash: bytes
    entry_hash: bytes


@dataclass(frozen=True)
class Checkpoint:
    service: str
    sequence: int
    head_hash: bytes
    time_us: int
    key_id: str
    signature: bytes


def _canonical(obj: Mapping[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(sequence: int, time_us: int, event: Event, previous_hash: bytes) -> bytes:
    body = {
        "details": dict(event.details), "operation": event.operation, "outcome": event.outcome,
        "previous_hash": previous_hash.hex(), "principal": event.principal, "resource": event.resource,
        "sequence": sequence, "service": event.service, "time_us": time_us,
    }
    return hashlib.sha256(_canonical(body)).digest()


def seal(sequence: int, time_us: int, event: Event, previous_hash: bytes) -> Entry:
    if event.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    digest = entry_hash(sequence, time_us, event, previous_hash)
    return Entry(sequence, time_us, event.service, event.principal, event.operation, event.resource,
                 event.outcome, dict(event.details), previous_hash, digest)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _checkpoint_message(service: str, sequence: int, head_hash: bytes, time_us: int) -> bytes:
    return _canonical({"head_hash": head_hash.hex(), "sequence": sequence, "service": service, "time_us": time_us})


def sign_checkpoint(key: Ed25519PrivateKey, service: str, sequence: int, head_hash: bytes, time_us: int) -> Checkpoint:
    signature = key.sign(_checkpoint_message(service, sequence, head_hash, time_us))
    return Checkpoint(service, sequence, head_hash, time_us, key_id(key.public_key()), signature)


def checkpoint_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    if checkpoint.key_id != key_id(public_key):
        return False
    message = _checkpoint_message(checkpoint.service, checkpoint.sequence, checkpoint.head_hash, checkpoint.time_us)
    try:
        public_key.verify(checkpoint.signature, message)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class Finding:
    """Why verification failed, and the first entry that is bad (0 when no single entry can be named)."""

    sequence: int
    message: str


def verify_log(service: str, entries: Sequence[Entry], checkpoints: Sequence[Checkpoint], head: Checkpoint,
               public_key: Ed25519PublicKey) -> Finding | None:
    """Verifies a whole log against its signed head; returns the first problem, or None if it is intact.

    Recomputing every hash finds a modified, inserted, removed or reordered entry; the signed checkpoints
    and head find a chain that was rewritten end to end, or cut short.
    """
    previous = GENESIS
    for position, entry in enumerate(entries, start=1):
        if entry.service != service:
            return Finding(position, f"entry {position} belongs to service {entry.service!r}")
        if entry.sequence != position:
            return Finding(position, f"entry {position} carries sequence {entry.sequence}: "
                                     "an entry was removed, inserted or moved here")
        if entry.previous_hash != previous:
            return Finding(position, f"entry {position} does not link to entry {position - 1}: "
                                     "an entry before it was removed, inserted or reordered")
        recomputed = entry_hash(entry.sequence, entry.time_us, Event(entry.service, entry.principal, entry.operation,
                                entry.resource, entry.outcome, entry.details), entry.previous_hash)
        if recomputed != entry.entry_hash:
            return Finding(position, f"entry {position} was modified: its content does not match its hash")
        previous = entry.entry_hash
    anchors = sorted([*checkpoints, head], key=lambda c: c.sequence)
    last_good = 0
    for checkpoint in anchors:
        label = "head" if checkpoint is head else f"checkpoint at {checkpoint.sequence}"
        if checkpoint.service != service or not checkpoint_valid(checkpoint, public_key):
            return Finding(0, f"{label}: signature does not verify under the service's audit key")
        if checkpoint.sequence > len(entries):
            return Finding(len(entries) + 1, f"{label} covers {checkpoint.sequence} entries but only "
                                             f"{len(entries)} are present: entries were removed from the end")
        expected = GENESIS if checkpoint.sequence == 0 else entries[checkpoint.sequence - 1].entry_hash
        if expected != checkpoint.head_hash:
            return Finding(last_good + 1, f"{label} does not match the chain: the log was rewritten "
                                          f"somewhere in entries {last_good + 1}..{checkpoint.sequence}")
        last_good = checkpoint.sequence
    if head.sequence != len(entries):
        return Finding(head.sequence + 1, f"{len(entries) - head.sequence} entries follow the signed head")
    return None
