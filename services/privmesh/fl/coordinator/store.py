"""Persistence of federations, participants, runs, their events and encrypted models (SQLite or PostgreSQL).

Resources are stored as their serialized contract messages (the contract is the schema; output-only fields
included), with the columns queries need beside them. Model rows hold only the key-broker envelope: no
plaintext weights are ever written. Request ids make the mutating calls idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from privmesh.fl.v1 import fl_pb2
from privmesh.runtime.db import Cursor, Database

M = TypeVar("M", bound=Message)
ACTIVE = (fl_pb2.RUN_STATE_PENDING, fl_pb2.RUN_STATE_RUNNING, fl_pb2.RUN_STATE_STOPPING)


class Conflict(Exception):
    """A unique column (name, public key, request id) is already taken; `what` says which."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class StoredEnvelope:
    model: fl_pb2.StoredModel
    tensors: list[fl_pb2.TensorInfo]
    envelope: bytes


def request_digest(request: Message) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


class CoordinatorStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        blob = db.blob
        with db.transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS fl_federations (name TEXT PRIMARY KEY, body {blob} NOT NULL)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS fl_participants (name TEXT PRIMARY KEY, federation TEXT NOT NULL, "
                        f"fingerprint TEXT NOT NULL UNIQUE, body {blob} NOT NULL)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS fl_runs (name TEXT PRIMARY KEY, federation TEXT NOT NULL, "
                        f"seq BIGINT NOT NULL, state INTEGER NOT NULL, body {blob} NOT NULL)")
            cur.execute(f"CREATE TABLE IF NOT EXISTS fl_events (run TEXT NOT NULL, sequence BIGINT NOT NULL, "
                        f"body {blob} NOT NULL, PRIMARY KEY (run, sequence))")
            cur.execute(f"CREATE TABLE IF NOT EXISTS fl_models (run TEXT PRIMARY KEY, body {blob} NOT NULL, "
                        f"header {blob} NOT NULL, envelope {blob} NOT NULL)")
            cur.execute("CREATE TABLE IF NOT EXISTS fl_requests (request_id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                        "resource TEXT NOT NULL)")

    # --- idempotency ---------------------------------------------------------------------------------------
    def _remember(self, cur: Cursor, request_id: str, digest: str, resource: str) -> None:
        if request_id:
            cur.execute("INSERT INTO fl_requests (request_id, digest, resource) VALUES (?, ?, ?)",
                        (request_id, digest, resource))

    def earlier_request(self, request_id: str) -> tuple[str, str] | None:
        """(digest, resource) of an earlier request with this id, if any."""
        if not request_id:
            return None
        rows = self.db.read("SELECT digest, resource FROM fl_requests WHERE request_id = ?", (request_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    # --- federations ---------------------------------------------------------------------------------------
    def create_federation(self, federation: fl_pb2.Federation, request_id: str, digest: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("SELECT 1 FROM fl_federations WHERE name = ?", (federation.name,))
            if cur.fetchone():
                raise Conflict("federation")
            cur.execute("INSERT INTO fl_federations (name, body) VALUES (?, ?)",
                        (federation.name, federation.SerializeToString()))
            self._remember(cur, request_id, digest, federation.name)

    def _one(self, sql: str, key: str, kind: type[M]) -> M | None:
        rows = self.db.read(sql, (key,))
        return kind.FromString(rows[0][0]) if rows else None

    def federation(self, name: str) -> fl_pb2.Federation | None:
        return self._one("SELECT body FROM fl_federations WHERE name = ?", name, fl_pb2.Federation)

    def federations(self, after: str, limit: int) -> list[fl_pb2.Federation]:
        rows = self.db.read("SELECT body FROM fl_federations WHERE name > ? ORDER BY name LIMIT ?", (after, limit))
        return [fl_pb2.Federation.FromString(r[0]) for r in rows]

    # --- participants --------------------------------------------------------------------------------------
    def add_participant(self, participant: fl_pb2.Participant, federation: str, request_id: str,
                        digest: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("SELECT 1 FROM fl_participants WHERE name = ?", (participant.name,))
            if cur.fetchone():
                raise Conflict("participant")
            cur.execute("SELECT 1 FROM fl_participants WHERE fingerprint = ?", (participant.public_key_fingerprint,))
            if cur.fetchone():
                raise Conflict("public_key")
            cur.execute("INSERT INTO fl_participants (name, federation, fingerprint, body) VALUES (?, ?, ?, ?)",
                        (participant.name, federation, participant.public_key_fingerprint,
                         participant.SerializeToString()))
            self._remember(cur, request_id, digest, participant.name)

    def fingerprint_taken(self, fingerprint: str) -> bool:
        return bool(self.db.read("SELECT 1 FROM fl_participants WHERE fingerprint = ?", (fingerprint,)))

    def participant(self, name: str) -> fl_pb2.Participant | None:
        return self._one("SELECT body FROM fl_participants WHERE name = ?", name, fl_pb2.Participant)

    def participants(self, federation: str, after: str = "", limit: int = 1_000_000) -> list[fl_pb2.Participant]:
        rows = self.db.read("SELECT body FROM fl_participants WHERE federation = ? AND name > ? ORDER BY name "
                            "LIMIT ?", (federation, after, limit))
        return [fl_pb2.Participant.FromString(r[0]) for r in rows]

    def remove_participant(self, name: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM fl_participants WHERE name = ?", (name,))

    # --- runs ----------------------------------------------------------------------------------------------
    def create_run(self, run: fl_pb2.Run, federation: str, seq: int, request_id: str, digest: str) -> None:
        """Stores a new run unless the federation has an active one (Conflict("active_run"))."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT name FROM fl_runs WHERE federation = ? AND state IN (?, ?, ?)"),
                        (federation, *ACTIVE))
            if cur.fetchone():
                raise Conflict("active_run")
            cur.execute("INSERT INTO fl_runs (name, federation, seq, state, body) VALUES (?, ?, ?, ?, ?)",
                        (run.name, federation, seq, run.state, run.SerializeToString()))
            self._remember(cur, request_id, digest, run.name)

    def run(self, name: str) -> fl_pb2.Run | None:
        return self._one("SELECT body FROM fl_runs WHERE name = ?", name, fl_pb2.Run)

    def update_run(self, name: str, change: Callable[[fl_pb2.Run], None]) -> fl_pb2.Run:
        """Reads, changes and writes a run in one transaction."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT body FROM fl_runs WHERE name = ?"), (name,))
            row = cur.fetchone()
            if row is None:
                raise KeyError(name)
            run = fl_pb2.Run.FromString(row[0])
            change(run)
            cur.execute("UPDATE fl_runs SET state = ?, body = ? WHERE name = ?", (run.state, run.SerializeToString(),
                                                                                   name))
            return run

    def runs(self, federation: str, before: int | None, limit: int, state: int = 0) -> list[tuple[int, fl_pb2.Run]]:
        """(seq, run) newest first, with seq below `before` when given."""
        sql = "SELECT seq, body FROM fl_runs WHERE federation = ?"
        params: list[object] = [federation]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if state:
            sql += " AND state = ?"
            params.append(state)
        rows = self.db.read(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [(int(r[0]), fl_pb2.Run.FromString(r[1])) for r in rows]

    def active_runs(self) -> list[fl_pb2.Run]:
        rows = self.db.read("SELECT body FROM fl_runs WHERE state IN (?, ?, ?)", ACTIVE)
        return [fl_pb2.Run.FromString(r[0]) for r in rows]

    # --- events --------------------------------------------------------------------------------------------
    def append_event(self, run_name: str, build: Callable[[int], fl_pb2.RunEvent],
                     change: Callable[[fl_pb2.Run], None] | None = None) -> tuple[fl_pb2.RunEvent, fl_pb2.Run]:
        """Assigns the next sequence, stores the event and applies `change` to the run, atomically."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT body FROM fl_runs WHERE name = ?"), (run_name,))
            run = fl_pb2.Run.FromString(cur.fetchone()[0])
            if change is not None:
                change(run)
            run.last_event_sequence += 1
            event = build(run.last_event_sequence)
            cur.execute("INSERT INTO fl_events (run, sequence, body) VALUES (?, ?, ?)",
                        (run_name, event.sequence, event.SerializeToString()))
            cur.execute("UPDATE fl_runs SET state = ?, body = ? WHERE name = ?",
                        (run.state, run.SerializeToString(), run_name))
            return event, run

    def events(self, run_name: str, after: int, limit: int = 500) -> list[fl_pb2.RunEvent]:
        rows = self.db.read("SELECT body FROM fl_events WHERE run = ? AND sequence > ? ORDER BY sequence LIMIT ?",
                            (run_name, after, limit))
        return [fl_pb2.RunEvent.FromString(r[0]) for r in rows]

    # --- models --------------------------------------------------------------------------------------------
    def put_model(self, run_name: str, model: fl_pb2.StoredModel, tensors: list[fl_pb2.TensorInfo],
                  envelope: bytes) -> None:
        header = fl_pb2.ModelHeader(tensors=tensors).SerializeToString()
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM fl_models WHERE run = ?", (run_name,))
            cur.execute("INSERT INTO fl_models (run, body, header, envelope) VALUES (?, ?, ?, ?)",
                        (run_name, model.SerializeToString(), header, envelope))

    def model(self, run_name: str) -> StoredEnvelope | None:
        rows = self.db.read("SELECT body, header, envelope FROM fl_models WHERE run = ?", (run_name,))
        if not rows:
            return None
        body, header, envelope = rows[0]
        return StoredEnvelope(fl_pb2.StoredModel.FromString(body), list(fl_pb2.ModelHeader.FromString(header).tensors),
                              bytes(envelope))
