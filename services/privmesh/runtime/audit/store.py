"""Persistence of audit chains in SQLite or PostgreSQL (one chain per service, several may share a database).

Appending takes the chain head under the database's write lock (BEGIN IMMEDIATE / SELECT ... FOR UPDATE),
so replicas writing the same chain serialize. Triggers refuse UPDATE and DELETE of entries: tampering
needs direct access to the files, and verification still finds it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.runtime.audit.chain import GENESIS, Checkpoint, Entry, Event, seal, sign_checkpoint
from privmesh.runtime.audit.checkpoint import log_origin
from privmesh.runtime.audit.tlog import TransparencyLog
from privmesh.runtime.db import Cursor, Database

_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
]
_POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION privmesh_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$f$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $f$",
    "CREATE OR REPLACE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries "
    "FOR EACH ROW EXECUTE FUNCTION privmesh_audit_append_only()",
]


def _now_us() -> int:
    return time.time_ns() // 1000


class AuditStore:
    def __init__(self, db: Database, service: str, signing_key: Ed25519PrivateKey, checkpoint_every: int,
                 origin: str | None = None) -> None:
        self.db = db
        self.service = service
        self._key = signing_key
        self._every = checkpoint_every
        self.tlog = TransparencyLog(db, service, origin or log_origin("privmesh.local", service), signing_key)
        self._migrate()

    def _migrate(self) -> None:
        blob = self.db.blob
        with self.db.transaction() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS audit_entries (chain TEXT NOT NULL, sequence BIGINT NOT NULL, "
                "time_us BIGINT NOT NULL, principal TEXT NOT NULL, operation TEXT NOT NULL, resource TEXT NOT NULL, "
                f"outcome TEXT NOT NULL, details TEXT NOT NULL, previous_hash {blob} NOT NULL, "
                f"entry_hash {blob} NOT NULL, PRIMARY KEY (chain, sequence))")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS audit_checkpoints (chain TEXT NOT NULL, sequence BIGINT NOT NULL, "
                f"time_us BIGINT NOT NULL, head_hash {blob} NOT NULL, key_id TEXT NOT NULL, "
                f"signature {blob} NOT NULL, PRIMARY KEY (chain, sequence))")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS audit_heads (chain TEXT PRIMARY KEY, sequence BIGINT NOT NULL, "
                f"head_hash {blob} NOT NULL)")
            for statement in _SQLITE_GUARDS if self.db.dialect == "sqlite" else _POSTGRES_GUARDS:
                cur.execute(statement)
            cur.execute("INSERT INTO audit_heads (chain, sequence, head_hash) VALUES (?, 0, ?) "
                        "ON CONFLICT (chain) DO NOTHING", (self.service, GENESIS))
            self.tlog.migrate(cur, self._lock_head(cur)[0])

    def _lock_head(self, cur: Cursor) -> tuple[int, bytes]:
        cur.execute(self.db.locking("SELECT sequence, head_hash FROM audit_heads WHERE chain = ?"), (self.service,))
        sequence, head = cur.fetchone()
        return int(sequence), bytes(head)

    def _insert_checkpoint(self, cur: Cursor, sequence: int, head: bytes) -> Checkpoint:
        self.tlog.sign(cur, sequence)
        checkpoint = sign_checkpoint(self._key, self.service, sequence, head, _now_us())
        cur.execute("INSERT INTO audit_checkpoints (chain, sequence, time_us, head_hash, key_id, signature) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (chain, sequence) DO NOTHING",
                    (self.service, sequence, checkpoint.time_us, head, checkpoint.key_id, checkpoint.signature))
        return checkpoint

    def append_batch(self, events: Sequence[Event]) -> list[Entry]:
        """Appends all events in one transaction (all or none), signing checkpoints at every N-th entry."""
        with self.db.transaction() as cur:
            sequence, head = self._lock_head(cur)
            size = sequence
            entries = []
            for event in events:
                sequence += 1
                entry = seal(sequence, _now_us(), event, head)
                head = entry.entry_hash
                entries.append(entry)
            cur.executemany(
                "INSERT INTO audit_entries (chain, sequence, time_us, principal, operation, resource, outcome, "
                "details, previous_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.service, e.sequence, e.time_us, e.principal, e.operation, e.resource, e.outcome,
                  json.dumps(dict(e.details), sort_keys=True), e.previous_hash, e.entry_hash) for e in entries])
            self.tlog.append(cur, size, [e.entry_hash for e in entries])
            for entry in entries:
                if entry.sequence % self._every == 0:
                    self._insert_checkpoint(cur, entry.sequence, entry.entry_hash)
            cur.execute("UPDATE audit_heads SET sequence = ?, head_hash = ? WHERE chain = ?",
                        (sequence, head, self.service))
        return entries

    def checkpoint_head(self) -> Checkpoint:
        """Signs (and stores) a checkpoint of the current head."""
        with self.db.transaction() as cur:
            sequence, head = self._lock_head(cur)
            return self._insert_checkpoint(cur, sequence, head)

    def entries(self, after: int, limit: int) -> list[Entry]:
        rows = self.db.read(
            "SELECT sequence, time_us, principal, operation, resource, outcome, details, previous_hash, entry_hash "
            "FROM audit_entries WHERE chain = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (self.service, after, limit))
        return [Entry(int(r[0]), int(r[1]), self.service, r[2], r[3], r[4], r[5], json.loads(r[6]), bytes(r[7]),
                      bytes(r[8])) for r in rows]

    def checkpoints(self, after: int, limit: int) -> list[Checkpoint]:
        rows = self.db.read(
            "SELECT sequence, time_us, head_hash, key_id, signature FROM audit_checkpoints "
            "WHERE chain = ? AND sequence > ? ORDER BY sequence LIMIT ?", (self.service, after, limit))
        return [Checkpoint(self.service, int(r[0]), bytes(r[2]), int(r[1]), r[3], bytes(r[4])) for r in rows]
