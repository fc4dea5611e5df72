"""Persistence of reference-value policies and of issued challenges (single-use nonces), in SQLite or
PostgreSQL through the runtime's Database. Nonces are stored as SHA-256 digests, never in clear."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from privmesh.attestation.document import KIND_NITRO_ENCLAVE
from privmesh.attestation.policy import PcrSet, Policy
from privmesh.runtime.db import Database


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class StoredPolicy:
    policy: Policy
    etag: str
    create_us: int
    update_us: int


def _encode(policy: Policy) -> str:
    return json.dumps({
        "allowed_pcr_sets": [{"pcrs": {str(i): v.hex() for i, v in s.pcrs.items()}, "description": s.description}
                             for s in policy.allowed_pcr_sets],
        "allow_debug": policy.allow_debug, "max_document_age_us": policy.max_document_age // timedelta(microseconds=1),
        "require_nonce": policy.require_nonce, "require_public_key": policy.require_public_key,
        "required_user_data": None if policy.required_user_data is None else policy.required_user_data.hex(),
        "description": policy.description, "kind": policy.kind,
    }, sort_keys=True)


def _decode(name: str, body: str) -> Policy:
    data = json.loads(body)
    return Policy(
        name=name,
        allowed_pcr_sets=[PcrSet({int(i): bytes.fromhex(v) for i, v in s["pcrs"].items()}, s["description"])
                          for s in data["allowed_pcr_sets"]],
        allow_debug=data["allow_debug"], max_document_age=timedelta(microseconds=data["max_document_age_us"]),
        require_nonce=data["require_nonce"], require_public_key=data["require_public_key"],
        required_user_data=None if data["required_user_data"] is None else bytes.fromhex(data["required_user_data"]),
        description=data["description"],
        kind=data.get("kind", KIND_NITRO_ENCLAVE),  # policies stored before kinds existed judge enclaves
    )


class EtagMismatch(Exception):
    """The stored policy's etag is not the one the caller based its change on."""


class PolicyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS attestation_policies (name TEXT PRIMARY KEY, body TEXT NOT NULL, "
                        "etag TEXT NOT NULL, create_us BIGINT NOT NULL, update_us BIGINT NOT NULL)")

    def put(self, policy: Policy, expected_etag: str = "") -> StoredPolicy:
        """Creates or replaces; with `expected_etag`, only if the stored etag matches (else EtagMismatch)."""
        now, etag = _now_us(), secrets.token_hex(8)
        with self.db.transaction() as cur:
            cur.execute("SELECT etag, create_us FROM attestation_policies WHERE name = ?", (policy.name,))
            row = cur.fetchone()
            if expected_etag and (row is None or not secrets.compare_digest(row[0], expected_etag)):
                raise EtagMismatch
            created = now if row is None else int(row[1])
            cur.execute("INSERT INTO attestation_policies (name, body, etag, create_us, update_us) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET body = excluded.body, "
                        "etag = excluded.etag, update_us = excluded.update_us",
                        (policy.name, _encode(policy), etag, created, now))
        return StoredPolicy(policy, etag, created, now)

    def get(self, name: str) -> StoredPolicy | None:
        rows = self.db.read("SELECT body, etag, create_us, update_us FROM attestation_policies WHERE name = ?", (name,))
        if not rows:
            return None
        body, etag, created, updated = rows[0]
        return StoredPolicy(_decode(name, body), etag, int(created), int(updated))

    def list(self, after: str, limit: int) -> list[StoredPolicy]:
        rows = self.db.read("SELECT name, body, etag, create_us, update_us FROM attestation_policies WHERE name > ? "
                            "ORDER BY name LIMIT ?", (after, limit))
        return [StoredPolicy(_decode(r[0], r[1]), r[2], int(r[3]), int(r[4])) for r in rows]

    def delete(self, name: str, expected_etag: str = "") -> bool:
        """Whether a policy was deleted; EtagMismatch when `expected_etag` does not match."""
        with self.db.transaction() as cur:
            cur.execute("SELECT etag FROM attestation_policies WHERE name = ?", (name,))
            row = cur.fetchone()
            if row is None:
                return False
            if expected_etag and not secrets.compare_digest(row[0], expected_etag):
                raise EtagMismatch
            cur.execute("DELETE FROM attestation_policies WHERE name = ?", (name,))
            return True


class NonceState(Enum):
    FRESH = "fresh"
    UNKNOWN = "unknown"  # never issued here, or expired
    REPLAYED = "replayed"


class NonceStore:
    """Single-use challenges; consuming one is atomic across processes and replicas."""

    def __init__(self, db: Database) -> None:
        self.db = db
        blob = db.blob
        with db.transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS attestation_nonces (digest {blob} PRIMARY KEY, "
                        "expire_us BIGINT NOT NULL, used_us BIGINT)")

    def issue(self, ttl: timedelta) -> tuple[bytes, int]:
        nonce = secrets.token_bytes(32)
        now = _now_us()
        expire = now + ttl // timedelta(microseconds=1)
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM attestation_nonces WHERE expire_us < ?", (now - 3_600_000_000,))
            cur.execute("INSERT INTO attestation_nonces (digest, expire_us) VALUES (?, ?)",
                        (hashlib.sha256(nonce).digest(), expire))
        return nonce, expire

    def consume(self, nonce: bytes, at_us: int, *, dry_run: bool = False) -> NonceState:
        """Uses the nonce up (unless `dry_run`), reporting whether it was fresh at `at_us`."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT expire_us, used_us FROM attestation_nonces WHERE digest = ?"),
                        (hashlib.sha256(nonce).digest(),))
            row = cur.fetchone()
            if row is None or int(row[0]) < at_us:
                return NonceState.UNKNOWN
            if row[1] is not None and not dry_run:
                return NonceState.REPLAYED
            if not dry_run:
                cur.execute("UPDATE attestation_nonces SET used_us = ? WHERE digest = ?",
                            (at_us, hashlib.sha256(nonce).digest()))
            return NonceState.FRESH
