"""Key metadata, versions, policies and idempotency records in SQLite or PostgreSQL (the runtime's Database).

Key material is never here: it lives in the backend. Every change runs in one transaction with the key's
row locked (`mutate`), so a failed check inside it changes nothing.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from google.protobuf import json_format

from privmesh.keybroker.v1 import keybroker_pb2 as pb
from privmesh.runtime.db import Database

T = TypeVar("T")
REQUEST_ID_TTL_US = 24 * 3600 * 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Caching:
    max_age_us: int
    max_messages: int
    max_bytes: int


@dataclass(frozen=True)
class VersionRecord:
    version: int
    state: int  # pb.KeyVersionState
    create_us: int
    material_expire_us: int | None = None
    destroy_us: int | None = None


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    alias: str
    description: str
    backend: str  # "local" | "aws-kms"
    origin: int  # pb.KeyOrigin
    state: int  # pb.KeyState
    primary_version: int
    create_us: int
    update_us: int
    etag: str
    arn: str = ""
    rotation_period_us: int | None = None
    next_rotation_us: int | None = None
    caching: Caching | None = None
    deletion_us: int | None = None
    destroy_us: int | None = None
    versions: tuple[VersionRecord, ...] = field(default=())

    @property
    def name(self) -> str:
        return f"keys/{self.key_id}"

    def version(self, number: int) -> VersionRecord | None:
        return next((v for v in self.versions if v.version == number), None)

    def changed(self, **changes: Any) -> KeyRecord:
        """A copy with the changes, a fresh etag and update time."""
        return replace(self, **changes, etag=secrets.token_hex(8), update_us=now_us())


class AliasTaken(Exception):
    """Another key that is not destroyed has this alias."""


_COLUMNS = ("key_id, alias, description, backend, origin, state, primary_version, create_us, update_us, etag, arn, "
            "rotation_period_us, next_rotation_us, caching, deletion_us, destroy_us")


def _caching_json(caching: Caching | None) -> str | None:
    return None if caching is None else json.dumps(caching.__dict__)


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS keybroker_keys (seq BIGINT NOT NULL, key_id TEXT PRIMARY KEY, "
                        "alias TEXT NOT NULL, description TEXT NOT NULL, backend TEXT NOT NULL, origin INTEGER NOT "
                        "NULL, state INTEGER NOT NULL, primary_version INTEGER NOT NULL, create_us BIGINT NOT NULL, "
                        "update_us BIGINT NOT NULL, etag TEXT NOT NULL, arn TEXT NOT NULL, rotation_period_us BIGINT, "
                        "next_rotation_us BIGINT, caching TEXT, deletion_us BIGINT, destroy_us BIGINT)")
            cur.execute("CREATE UNIQUE INDEX IF NOT EXISTS keybroker_live_alias ON keybroker_keys (alias) "
                        f"WHERE alias <> '' AND state <> {pb.KEY_STATE_DESTROYED}")
            cur.execute("CREATE TABLE IF NOT EXISTS keybroker_versions (key_id TEXT NOT NULL, version INTEGER NOT "
                        "NULL, state INTEGER NOT NULL, create_us BIGINT NOT NULL, material_expire_us BIGINT, "
                        "destroy_us BIGINT, PRIMARY KEY (key_id, version))")
            cur.execute("CREATE TABLE IF NOT EXISTS keybroker_policies (key_id TEXT PRIMARY KEY, body TEXT NOT NULL, "
                        "etag TEXT NOT NULL, update_us BIGINT NOT NULL)")
            cur.execute("CREATE TABLE IF NOT EXISTS keybroker_requests (request_id TEXT PRIMARY KEY, fingerprint "
                        "TEXT NOT NULL, key_id TEXT NOT NULL, result TEXT NOT NULL, create_us BIGINT NOT NULL)")

    # --- reading ---

    def _key(self, cur: Any, where: str, param: object, lock: bool = False) -> KeyRecord | None:
        select = f"SELECT {_COLUMNS} FROM keybroker_keys WHERE {where}"  # noqa: S608 (constant clauses only)
        cur.execute(self.db.locking(select) if lock else select, (param,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("SELECT version, state, create_us, material_expire_us, destroy_us FROM keybroker_versions "
                    "WHERE key_id = ? ORDER BY version", (row[0],))
        versions = tuple(VersionRecord(int(v[0]), int(v[1]), int(v[2]), v[3], v[4]) for v in cur.fetchall())
        caching = None if row[13] is None else Caching(**json.loads(row[13]))
        return KeyRecord(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), int(row[6]), int(row[7]),
                         int(row[8]), row[9], row[10], row[11], row[12], caching, row[14], row[15], versions)

    def get(self, key_id: str) -> KeyRecord | None:
        with self.db.transaction() as cur:
            return self._key(cur, "key_id = ?", key_id)

    def by_alias(self, alias: str) -> KeyRecord | None:
        with self.db.transaction() as cur:
            return self._key(cur, f"alias = ? AND state <> {pb.KEY_STATE_DESTROYED}", alias)

    def page(self, after_seq: int, limit: int, backend: str | None, show_destroyed: bool) -> list[tuple[int, str]]:
        """(seq, key id) of keys after `after_seq`, oldest first."""
        sql = "SELECT seq, key_id FROM keybroker_keys WHERE seq > ?"
        params: list[object] = [after_seq]
        if backend:
            sql += " AND backend = ?"
            params.append(backend)
        if not show_destroyed:
            sql += " AND state <> ?"
            params.append(pb.KEY_STATE_DESTROYED)
        rows = self.db.read(sql + " ORDER BY seq LIMIT ?", (*params, limit))
        return [(int(r[0]), r[1]) for r in rows]

    def due(self, now: int) -> list[str]:
        """Keys with a deletion, an expiry or a rotation that has come due."""
        rows = self.db.read(
            "SELECT DISTINCT k.key_id FROM keybroker_keys k LEFT JOIN keybroker_versions v ON v.key_id = k.key_id "
            "WHERE (k.state = ? AND k.deletion_us <= ?) OR (k.next_rotation_us <= ? AND k.state = ?) OR "
            "(v.material_expire_us <= ? AND v.state = ?)",
            (pb.KEY_STATE_PENDING_DELETION, now, now, pb.KEY_STATE_ENABLED, now, pb.KEY_VERSION_STATE_AVAILABLE))
        return [r[0] for r in rows]

    # --- writing ---

    def _write(self, cur: Any, record: KeyRecord) -> None:
        values = (record.alias, record.description, record.backend, record.origin, record.state,
                  record.primary_version, record.create_us, record.update_us, record.etag, record.arn,
                  record.rotation_period_us, record.next_rotation_us, _caching_json(record.caching),
                  record.deletion_us, record.destroy_us)
        if record.alias and record.state != pb.KEY_STATE_DESTROYED:
            cur.execute("SELECT key_id FROM keybroker_keys WHERE alias = ? AND state <> ? AND key_id <> ?",
                        (record.alias, pb.KEY_STATE_DESTROYED, record.key_id))
            if cur.fetchone() is not None:
                raise AliasTaken
        cur.execute("UPDATE keybroker_keys SET alias = ?, description = ?, backend = ?, origin = ?, state = ?, "
                    "primary_version = ?, create_us = ?, update_us = ?, etag = ?, arn = ?, rotation_period_us = ?, "
                    "next_rotation_us = ?, caching = ?, deletion_us = ?, destroy_us = ? WHERE key_id = ?",
                    (*values, record.key_id))
        cur.execute("DELETE FROM keybroker_versions WHERE key_id = ?", (record.key_id,))
        cur.executemany("INSERT INTO keybroker_versions (key_id, version, state, create_us, material_expire_us, "
                        "destroy_us) VALUES (?, ?, ?, ?, ?, ?)",
                        [(record.key_id, v.version, v.state, v.create_us, v.material_expire_us, v.destroy_us)
                         for v in record.versions])

    def create(self, record: KeyRecord, policy: pb.KeyPolicy, request: tuple[str, str] | None = None) -> None:
        """Inserts a key with its policy (and, with `request` = (request_id, fingerprint), its idempotency record)."""
        with self.db.transaction() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM keybroker_keys")
            seq = int(cur.fetchone()[0])
            cur.execute("INSERT INTO keybroker_keys (seq, key_id, alias, description, backend, origin, state, "
                        "primary_version, create_us, update_us, etag, arn) VALUES (?, ?, '', '', '', 0, 0, 0, 0, 0, "
                        "'', '')", (seq, record.key_id))
            self._write(cur, record)
            cur.execute("INSERT INTO keybroker_policies (key_id, body, etag, update_us) VALUES (?, ?, ?, ?)",
                        (record.key_id, json_format.MessageToJson(policy), secrets.token_hex(8), record.create_us))
            if request is not None:
                self._remember(cur, request[0], request[1], record.key_id, "")

    def mutate(self, key_id: str, change: Callable[[KeyRecord], tuple[KeyRecord, T]]) -> tuple[KeyRecord, T]:
        """Applies `change` to the locked current record and stores what it returns (nothing if it raises)."""
        with self.db.transaction() as cur:
            current = self._key(cur, "key_id = ?", key_id, lock=True)
            if current is None:
                raise KeyError(key_id)
            updated, result = change(current)
            if updated is not current:
                self._write(cur, updated)
            return updated, result

    # --- policies ---

    def policy(self, key_id: str) -> tuple[pb.KeyPolicy, str, int]:
        rows = self.db.read("SELECT body, etag, update_us FROM keybroker_policies WHERE key_id = ?", (key_id,))
        body, etag, updated = rows[0]
        return json_format.Parse(body, pb.KeyPolicy()), etag, int(updated)

    def put_policy(self, key_id: str, policy: pb.KeyPolicy, expected_etag: str) -> tuple[str, int] | None:
        """Stores the policy; None when `expected_etag` is given and does not match."""
        etag, updated = secrets.token_hex(8), now_us()
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT etag FROM keybroker_policies WHERE key_id = ?"), (key_id,))
            row = cur.fetchone()
            if expected_etag and not secrets.compare_digest(row[0], expected_etag):
                return None
            cur.execute("UPDATE keybroker_policies SET body = ?, etag = ?, update_us = ? WHERE key_id = ?",
                        (json_format.MessageToJson(policy), etag, updated, key_id))
        return etag, updated

    # --- idempotency ---

    def _remember(self, cur: Any, request_id: str, fingerprint: str, key_id: str, result: str) -> None:
        cur.execute("DELETE FROM keybroker_requests WHERE create_us < ?", (now_us() - REQUEST_ID_TTL_US,))
        cur.execute("INSERT INTO keybroker_requests (request_id, fingerprint, key_id, result, create_us) "
                    "VALUES (?, ?, ?, ?, ?)", (request_id, fingerprint, key_id, result, now_us()))

    def recall(self, request_id: str) -> tuple[str, str, str] | None:
        """(fingerprint, key id, result) of a request id seen within 24 hours."""
        rows = self.db.read("SELECT fingerprint, key_id, result FROM keybroker_requests WHERE request_id = ? AND "
                            "create_us >= ?", (request_id, now_us() - REQUEST_ID_TTL_US))
        return None if not rows else (rows[0][0], rows[0][1], rows[0][2])

    def mutate_remembered(self, key_id: str, change: Callable[[KeyRecord], tuple[KeyRecord, T]],
                          request: tuple[str, str], result: Callable[[T], str]) -> tuple[KeyRecord, T]:
        """`mutate` that also records the request id in the same transaction."""
        with self.db.transaction() as cur:
            current = self._key(cur, "key_id = ?", key_id, lock=True)
            if current is None:
                raise KeyError(key_id)
            updated, value = change(current)
            self._write(cur, updated)
            self._remember(cur, request[0], request[1], key_id, result(value))
            return updated, value
