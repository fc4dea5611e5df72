"""The vault's storage in SQLite or PostgreSQL through the runtime's Database, with numbered migrations.

Tables (prefix tv_): fields (configuration and the field secret, wrapped), data_keys (wrapped data keys,
per field and optionally per subject), subject_keks (the key-broker key of each shredded subject), entries
(token, value under AES-256-GCM, keyed hashes of value and subject, expiry), requests (idempotency records),
rotations. Nothing here holds a value, key or subject id in clear: values are ciphertext,
look-ups go through keyed hashes.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, NamedTuple, Protocol

from privmesh.runtime.db import Cursor, Database

#: Migrations in order; each runs once, in one transaction, recorded in tv_schema. Never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE tv_fields (tenant TEXT NOT NULL, field TEXT NOT NULL, config {blob} NOT NULL, "
        "etag TEXT NOT NULL, create_us BIGINT NOT NULL, update_us BIGINT NOT NULL, "
        "secret_wrapped {blob} NOT NULL, secret_key TEXT NOT NULL, secret_version INTEGER NOT NULL, "
        "PRIMARY KEY (tenant, field))",
        "CREATE TABLE tv_data_keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, field TEXT NOT NULL, "
        "subject_hash {blob}, key_name TEXT NOT NULL, key_version INTEGER NOT NULL, wrapped {blob} NOT NULL, "
        "create_us BIGINT NOT NULL, retired_us BIGINT)",
        "CREATE INDEX tv_data_keys_field ON tv_data_keys (tenant, field, subject_hash)",
        "CREATE TABLE tv_entries (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, field TEXT NOT NULL, "
        "token TEXT NOT NULL, value_hash {blob}, subject_hash {blob} NOT NULL, data_key_id TEXT NOT NULL, "
        "nonce {blob} NOT NULL, ciphertext {blob} NOT NULL, create_us BIGINT NOT NULL, expire_us BIGINT)",
        "CREATE INDEX tv_entries_token ON tv_entries (tenant, field, token)",
        "CREATE UNIQUE INDEX tv_entries_value ON tv_entries (tenant, field, value_hash, subject_hash) "
        "WHERE value_hash IS NOT NULL",
        "CREATE INDEX tv_entries_subject ON tv_entries (tenant, field, subject_hash)",
        "CREATE INDEX tv_entries_data_key ON tv_entries (data_key_id)",
        "CREATE TABLE tv_requests (tenant TEXT NOT NULL, method TEXT NOT NULL, request_id TEXT NOT NULL, "
        "fingerprint {blob} NOT NULL, response {blob} NOT NULL, create_us BIGINT NOT NULL, "
        "PRIMARY KEY (tenant, method, request_id))",
        "CREATE TABLE tv_rotations (tenant TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, "
        "state TEXT NOT NULL, entries_total BIGINT NOT NULL, entries_done BIGINT NOT NULL, "
        "create_us BIGINT NOT NULL, request_id TEXT, PRIMARY KEY (tenant, id))",
    ),
    (
        "CREATE INDEX tv_entries_expiry ON tv_entries (expire_us) WHERE expire_us IS NOT NULL",
    ),
    (  # entries without a subject (most) need no place in the subject index: ~10% off a batch insert
        "DROP INDEX tv_entries_subject",
        "CREATE INDEX tv_entries_subject ON tv_entries (tenant, field, subject_hash) WHERE length(subject_hash) > 0",
    ),
    (  # random tokens now name their entry's id (profiles.RandomProfile) and are stored empty: only the
       # other profiles' tokens, and random ones drawn before, stay in the token index (~1.5x faster inserts)
        "DROP INDEX tv_entries_token",
        "CREATE INDEX tv_entries_token ON tv_entries (tenant, field, token) WHERE token <> ''",
    ),
    (  # subject_key_shredding: each (tenant, field, subject) wraps its data keys under its own key-broker key
       # (a subject KEK), whose deletion ForgetSubject schedules, so that backups of this database are shredded too
        "CREATE TABLE tv_subject_keks (tenant TEXT NOT NULL, field TEXT NOT NULL, subject_hash {blob} NOT NULL, "
        "key_name TEXT NOT NULL, create_us BIGINT NOT NULL, PRIMARY KEY (tenant, field, subject_hash))",
    ),
    (  # resumable rotations: the process running one holds a lease, renewed per batch, that another process
       # takes over once it expires; the data keys a rotation retired are marked with its id
        "ALTER TABLE tv_rotations ADD COLUMN lease_owner TEXT",
        "ALTER TABLE tv_rotations ADD COLUMN lease_expire_us BIGINT",
        "ALTER TABLE tv_data_keys ADD COLUMN rotation_id TEXT",
        "CREATE INDEX tv_data_keys_rotation ON tv_data_keys (rotation_id) WHERE rotation_id IS NOT NULL",
    ),
    (  # DeleteField moves the field's subject KEKs here in its transaction; maintenance schedules their deletion
       # in key-broker (retried until it can) and then forgets them
        "CREATE TABLE tv_kek_graveyard (key_name TEXT PRIMARY KEY, create_us BIGINT NOT NULL)",
    ),
)
#: Lets SQLite and PostgreSQL use the partial token index (stored tokens are never empty there).
INDEXED_TOKEN = "token <> ''"  # noqa: S105 - SQL, not a secret
REQUEST_RETENTION_US = 24 * 3600 * 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def new_id() -> str:
    return secrets.token_hex(16)


def new_entry_ids(count: int) -> list[str]:
    """Unique entry ids (32 hex digits) that start with the creation time, so that a batch's primary-key
    entries land on the last pages of the index instead of random ones (random ids made inserts ~1.6x
    slower). 72 random bits per id keep them unique across writers."""
    prefix = f"{now_us():014x}"
    suffixes = secrets.token_hex(9 * count)
    return [prefix + suffixes[18 * n:18 * n + 18] for n in range(count)]


def placeholders(count: int) -> str:
    return ",".join("?" * count)


@dataclass(frozen=True)
class StoredField:
    tenant: str
    field: str
    config: bytes  # a serialized tokenvault.v1.Field (name and output-only parts not stored)
    etag: str
    create_us: int
    update_us: int
    secret_wrapped: bytes
    secret_key: str
    secret_version: int


@dataclass(frozen=True)
class DataKeyRow:
    id: str
    tenant: str
    field: str
    subject_hash: bytes | None
    key_name: str
    key_version: int
    wrapped: bytes


class NewEntry(NamedTuple):  # a tuple in tv_entries' insert order: cheap to build and to insert
    id: str
    field: str
    token: str
    value_hash: bytes | None
    subject_hash: bytes
    data_key_id: str
    nonce: bytes
    ciphertext: bytes
    expire_us: int | None


class NewEntries(NamedTuple):
    """New entries column by column, in NewEntry's order: a batch is bound without a tuple per entry."""

    id: Sequence[str]
    field: Sequence[str]
    token: Sequence[str]
    value_hash: Sequence[bytes | None]
    subject_hash: Sequence[bytes]
    data_key_id: Sequence[str]
    nonce: Sequence[bytes]
    ciphertext: Sequence[bytes]
    expire_us: Sequence[int | None]

    @classmethod
    def of(cls, entries: Sequence[NewEntry]) -> NewEntries:
        return cls(*zip(*entries, strict=True)) if entries else cls(*[()] * len(cls._fields))


MAX_INSERT_ROWS = 512  # parameters stay far below SQLite's limit of 32766
_UNIQUE_COLUMNS = frozenset({"id", "nonce", "ciphertext"})  # never shared by two entries
_BLOB_COLUMNS = frozenset({"value_hash", "subject_hash", "nonce", "ciphertext"})


def _bindable(name: str, values: Sequence[Any]) -> Sequence[Any]:
    if name not in _BLOB_COLUMNS:
        return values
    if None in values:
        return [None if v is None else bytearray(v) for v in values]
    return list(map(bytearray, values))


@functools.cache
def _insert_rows(shared: tuple[str, ...], varying: tuple[str, ...], rows: int) -> str:
    """A SQLite INSERT of `rows` entries: tenant, create_us and the shared columns are ?1, ?2, ... for every
    row; each plain '?' takes the next number (the varying columns, row by row)."""
    head = [f"?{n}" for n in range(1, 3 + len(shared))]
    row = f"({', '.join(head + ['?'] * len(varying))})"
    return (f"INSERT INTO tv_entries (tenant, create_us, {', '.join(shared + varying)}) VALUES "  # noqa: S608
            f"{', '.join([row] * rows)}")


@dataclass(frozen=True)
class FoundEntry:
    id: str
    field: str
    token: str
    data_key_id: str
    nonce: bytes
    ciphertext: bytes
    key_name: str
    wrapped: bytes


class EtagMismatch(Exception):
    pass


class WriteConflict(Exception):
    """A store without unique indexes (DynamoDB) lost a conditional write to another writer: nothing of the
    transaction stays; the vault prepares and writes again, as after a unique violation."""


class LeaseLost(Exception):
    """Another process has taken over this rotation (this one's lease expired)."""


@dataclass(frozen=True)
class Lease:
    """A process's hold on the rotations it runs, until `until_us`."""

    owner: str
    until_us: int


class Transactional(Protocol):
    @property
    def dialect(self) -> str: ...  # read-only, so runtime.db's Literal-typed attribute satisfies it

    def transaction(self) -> AbstractContextManager[Any]: ...


class VaultStore(Protocol):
    """What the vault, its keyring and the field service use of a store: `Store` (SQLite, PostgreSQL) and
    `privmesh.tokenvault.dynamo.DynamoStore` (DynamoDB). `cur` is the store's own transaction object."""

    @property
    def db(self) -> Transactional: ...

    def insert_field(self, stored: StoredField, cur: Any) -> bool: ...

    def get_field(self, tenant: str, field: str) -> StoredField | None: ...

    def get_fields(self, tenant: str, fields: Iterable[str]) -> dict[str, StoredField]: ...

    def tenant_fields(self, tenant: str) -> list[StoredField]: ...

    def insert_data_key(self, row: DataKeyRow) -> None: ...

    def retired(self, cur: Any, ids: Sequence[str]) -> set[str]: ...

    def subject_kek(self, tenant: str, field: str, subject_hash: bytes, cur: Any = None) -> str | None: ...

    def record_subject_kek(self, tenant: str, field: str, subject_hash: bytes, key_name: str) -> str: ...

    def stale_subject_keys(self, cur: Any, tenant: str, field: str, key_ids: Sequence[str]) -> bool: ...

    def buried_keks(self, limit: int = 1000) -> list[str]: ...

    def unbury_kek(self, key_name: str) -> None: ...

    def existing_by_value(self, cur: Any, tenant: str, field: str, hashes: Sequence[bytes],
                          now: int) -> list[tuple[str, str, bytes, bytes, int | None]]: ...

    def tokens_taken(self, cur: Any, tenant: str, field: str, tokens: Sequence[str]) -> set[str]: ...

    def insert_entries(self, cur: Any, tenant: str, entries: NewEntries, now: int) -> None: ...

    def extend_expiry(self, cur: Any, updates: Sequence[tuple[int | None, str]]) -> None: ...

    def find_tokens(self, tenant: str, field: str, tokens: Sequence[str], now: int,
                    ids: dict[str, str] | None = None) -> dict[str, FoundEntry]: ...

    def delete_tokens(self, cur: Any, tenant: str, field: str, tokens: Sequence[str],
                      ids: Sequence[str] = ()) -> int: ...

    def forget_subject(self, cur: Any, tenant: str, field: str, subject_hash: bytes) -> tuple[int, list[str]]: ...

    def replay(self, cur: Any, tenant: str, method: str, request_id: str) -> tuple[bytes, bytes] | None: ...

    def remember(self, cur: Any, tenant: str, method: str, request_id: str, fingerprint: bytes,
                 response: bytes) -> None: ...


class FieldStore(VaultStore, Protocol):
    """What the field service uses besides: listing, updating and deleting fields."""

    def list_fields(self, tenant: str | None, after: str, limit: int) -> list[StoredField]: ...

    def update_field(self, tenant: str, field: str, config: bytes, expected_etag: str,
                     wrapped: tuple[bytes, str, int] | None = None) -> StoredField | None: ...

    def delete_field(self, tenant: str, field: str, force: bool, expected_etag: str) -> int | None: ...


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.migrate()

    @property
    def schema_version(self) -> int:
        return int(self.db.read("SELECT version FROM tv_schema")[0][0])

    def migrate(self) -> None:
        """Applies the migrations this database has not seen; safe with several processes starting at once."""
        with self.db.transaction() as cur:
            if self.db.dialect == "postgres":
                cur.execute("SELECT pg_advisory_xact_lock(7305512)")  # one migrator at a time
            cur.execute("CREATE TABLE IF NOT EXISTS tv_schema (version INTEGER NOT NULL)")
            cur.execute("SELECT version FROM tv_schema")
            row = cur.fetchone()
            version = 0 if row is None else int(row[0])
            if row is None:
                cur.execute("INSERT INTO tv_schema (version) VALUES (0)")
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= version:
                    continue
                for statement in statements:
                    cur.execute(statement.format(blob=self.db.blob))
                cur.execute("UPDATE tv_schema SET version = ?", (number,))

    # --- fields ---------------------------------------------------------------------------------------

    _FIELD_COLUMNS = "tenant, field, config, etag, create_us, update_us, secret_wrapped, secret_key, secret_version"

    def insert_field(self, stored: StoredField, cur: Cursor) -> bool:
        """Whether it was inserted (False: the field exists)."""
        cur.execute("SELECT 1 FROM tv_fields WHERE tenant = ? AND field = ?", (stored.tenant, stored.field))
        if cur.fetchone() is not None:
            return False
        cur.execute(f"INSERT INTO tv_fields ({self._FIELD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (stored.tenant, stored.field, stored.config, stored.etag, stored.create_us, stored.update_us,
                     stored.secret_wrapped, stored.secret_key, stored.secret_version))
        return True

    def get_field(self, tenant: str, field: str) -> StoredField | None:
        rows = self.db.read(f"SELECT {self._FIELD_COLUMNS} FROM tv_fields WHERE tenant = ? AND field = ?",  # noqa: S608
                            (tenant, field))
        return StoredField(*rows[0]) if rows else None

    def get_fields(self, tenant: str, fields: Iterable[str]) -> dict[str, StoredField]:
        names = sorted(set(fields))
        if not names:
            return {}
        rows = self.db.read(f"SELECT {self._FIELD_COLUMNS} FROM tv_fields WHERE tenant = ? AND field IN "  # noqa: S608
                            f"({placeholders(len(names))})", (tenant, *names))
        return {r[1]: StoredField(*r) for r in rows}

    def tenant_fields(self, tenant: str) -> list[StoredField]:
        rows = self.db.read(f"SELECT {self._FIELD_COLUMNS} FROM tv_fields WHERE tenant = ? ORDER BY field", (tenant,))  # noqa: S608
        return [StoredField(*r) for r in rows]

    def list_fields(self, tenant: str | None, after: str, limit: int) -> list[StoredField]:
        """Ordered by resource name; `after` is the last name of the previous page."""
        key = "'tenants/' || tenant || '/fields/' || field"
        where, params = (f"{key} > ?", [after]) if tenant is None else (f"tenant = ? AND {key} > ?", [tenant, after])
        rows = self.db.read(f"SELECT {self._FIELD_COLUMNS} FROM tv_fields WHERE {where} ORDER BY {key} LIMIT ?",  # noqa: S608
                            (*params, limit))
        return [StoredField(*r) for r in rows]

    def _lock_field(self, cur: Cursor, tenant: str, field: str, expected_etag: str) -> bool:
        """Locks the field's row; False when it does not exist, EtagMismatch when `expected_etag` is set and
        differs."""
        cur.execute(self.db.locking("SELECT etag FROM tv_fields WHERE tenant = ? AND field = ?"), (tenant, field))
        row = cur.fetchone()
        if row is None:
            return False
        if expected_etag and not secrets.compare_digest(row[0], expected_etag):
            raise EtagMismatch
        return True

    def update_field(self, tenant: str, field: str, config: bytes, expected_etag: str,
                     wrapped: tuple[bytes, str, int] | None = None) -> StoredField | None:
        """None when the field does not exist; EtagMismatch when `expected_etag` is set and differs."""
        with self.db.transaction() as cur:
            if not self._lock_field(cur, tenant, field, expected_etag):
                return None
            cur.execute("UPDATE tv_fields SET config = ?, etag = ?, update_us = ? WHERE tenant = ? AND field = ?",
                        (config, secrets.token_hex(8), now_us(), tenant, field))
            if wrapped is not None:
                cur.execute("UPDATE tv_fields SET secret_wrapped = ?, secret_key = ?, secret_version = ? "
                            "WHERE tenant = ? AND field = ?", (*wrapped, tenant, field))
        return self.get_field(tenant, field)

    def delete_field(self, tenant: str, field: str, force: bool, expected_etag: str) -> int | None:
        """Entries deleted with the field; None if absent; -1 when it has entries and not `force`."""
        with self.db.transaction() as cur:
            if not self._lock_field(cur, tenant, field, expected_etag):
                return None
            cur.execute("SELECT COUNT(*) FROM tv_entries WHERE tenant = ? AND field = ?", (tenant, field))
            count = int(cur.fetchone()[0])
            if count and not force:
                return -1
            cur.execute("INSERT INTO tv_kek_graveyard (key_name, create_us) SELECT key_name, ? FROM tv_subject_keks "
                        "WHERE tenant = ? AND field = ? ON CONFLICT DO NOTHING", (now_us(), tenant, field))
            for table in ("tv_entries", "tv_data_keys", "tv_subject_keks", "tv_fields"):
                cur.execute(f"DELETE FROM {table} WHERE tenant = ? AND field = ?", (tenant, field))  # noqa: S608
            return count

    def rewrap_secret(self, tenant: str, field: str, old: bytes, wrapped: bytes, key: str, version: int) -> None:
        """Stores the field secret's new wrap, unless the secret changed meanwhile."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE tv_fields SET secret_wrapped = ?, secret_key = ?, secret_version = ? WHERE tenant = ? "
                        "AND field = ? AND secret_wrapped = ?", (wrapped, key, version, tenant, field, old))

    # --- data keys ------------------------------------------------------------------------------------

    def insert_data_key(self, row: DataKeyRow) -> None:
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO tv_data_keys (id, tenant, field, subject_hash, key_name, key_version, wrapped, "
                        "create_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (row.id, row.tenant, row.field, row.subject_hash, row.key_name, row.key_version, row.wrapped,
                         now_us()))

    def retired(self, cur: Cursor, ids: Sequence[str]) -> set[str]:
        """Which of these data keys no longer take new entries (retired by a rotation, or shredded)."""
        if not ids:
            return set()
        cur.execute(f"SELECT id, retired_us FROM tv_data_keys WHERE id IN ({placeholders(len(ids))})", tuple(ids))  # noqa: S608
        live = {r[0] for r in cur.fetchall() if r[1] is None}
        return set(ids) - live

    # --- subject KEKs (subject_key_shredding) ---------------------------------------------------------

    def subject_kek(self, tenant: str, field: str, subject_hash: bytes, cur: Cursor | None = None) -> str | None:
        """The subject's KEK name (locked until the transaction ends when read in `cur`)."""
        statement = "SELECT key_name FROM tv_subject_keks WHERE tenant = ? AND field = ? AND subject_hash = ?"
        if cur is None:
            rows = self.db.read(statement, (tenant, field, subject_hash))
        else:
            cur.execute(self.db.locking(statement), (tenant, field, subject_hash))
            rows = cur.fetchall()
        return str(rows[0][0]) if rows else None

    def record_subject_kek(self, tenant: str, field: str, subject_hash: bytes, key_name: str) -> str:
        """The subject's KEK: `key_name` when this call recorded it, else the one another writer recorded first
        (the primary key lets exactly one win)."""
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO tv_subject_keks (tenant, field, subject_hash, key_name, create_us) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (tenant, field, subject_hash, key_name, now_us()))
            cur.execute("SELECT key_name FROM tv_subject_keks WHERE tenant = ? AND field = ? AND subject_hash = ?",
                        (tenant, field, subject_hash))
            return str(cur.fetchone()[0])

    def buried_keks(self, limit: int = 1000) -> list[str]:
        """Subject KEKs of deleted fields whose deletion key-broker has not confirmed yet."""
        return [str(r[0]) for r in self.db.read("SELECT key_name FROM tv_kek_graveyard ORDER BY create_us LIMIT ?",
                                                (limit,))]

    def unbury_kek(self, key_name: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM tv_kek_graveyard WHERE key_name = ?", (key_name,))

    def subject_keks_of(self, tenant: str, fields: Sequence[str]) -> list[str]:
        if not fields:
            return []
        return [str(r[0]) for r in self.db.read(
            f"SELECT key_name FROM tv_subject_keks WHERE tenant = ? AND field IN ({placeholders(len(fields))}) "  # noqa: S608
            "ORDER BY key_name", (tenant, *fields))]

    def stale_subject_keys(self, cur: Cursor, tenant: str, field: str, key_ids: Sequence[str]) -> bool:
        """Whether a subject data key among these is wrapped under a KEK that is no longer its subject's (a
        ForgetSubject ran since it was generated). Locks the subjects' KEK rows until the transaction ends, so
        that a ForgetSubject waits for this write and then erases it too."""
        if not key_ids:
            return False
        cur.execute(f"SELECT subject_hash, key_name FROM tv_data_keys WHERE id IN ({placeholders(len(key_ids))}) "  # noqa: S608
                    "AND subject_hash IS NOT NULL", tuple(key_ids))
        used = {(bytes(r[0]), r[1]) for r in cur.fetchall()}
        if not used:
            return False
        hashes = sorted({h for h, _ in used})
        cur.execute(self.db.locking(f"SELECT subject_hash, key_name FROM tv_subject_keks WHERE tenant = ? AND "  # noqa: S608
                                    f"field = ? AND subject_hash IN ({placeholders(len(hashes))})"),
                    (tenant, field, *hashes))
        return not used <= {(bytes(r[0]), r[1]) for r in cur.fetchall()}

    # --- entries --------------------------------------------------------------------------------------

    def existing_by_value(self, cur: Cursor, tenant: str, field: str, hashes: Sequence[bytes],
                          now: int) -> list[tuple[str, str, bytes, bytes, int | None]]:
        """Live deterministic entries (id, token, value_hash, subject_hash, expire_us) of these value hashes;
        expired ones among them are deleted, so that the value can be tokenized afresh."""
        if not hashes:
            return []
        cur.execute(f"SELECT id, token, value_hash, subject_hash, expire_us FROM tv_entries WHERE tenant = ? AND "  # noqa: S608
                    f"field = ? AND value_hash IN ({placeholders(len(hashes))})", (tenant, field, *hashes))
        rows = [(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4]) for r in cur.fetchall()]
        expired = [r[0] for r in rows if r[4] is not None and r[4] <= now]
        if expired:
            cur.execute(f"DELETE FROM tv_entries WHERE id IN ({placeholders(len(expired))})", tuple(expired))  # noqa: S608
        return [r for r in rows if r[4] is None or r[4] > now]

    def tokens_taken(self, cur: Cursor, tenant: str, field: str, tokens: Sequence[str]) -> set[str]:
        if not tokens:
            return set()
        cur.execute(f"SELECT DISTINCT token FROM tv_entries WHERE tenant = ? AND field = ? AND token IN "  # noqa: S608
                    f"({placeholders(len(tokens))}) AND {INDEXED_TOKEN}", (tenant, field, *tokens))
        return {r[0] for r in cur.fetchall()}

    def insert_entries(self, cur: Cursor, tenant: str, entries: NewEntries, now: int) -> None:
        if not entries.id:
            return
        if self.db.dialect == "postgres":  # psycopg pipelines executemany
            cur.executemany(f"INSERT INTO tv_entries (tenant, create_us, {', '.join(NewEntries._fields)}) VALUES "  # noqa: S608
                            f"({placeholders(2 + len(NewEntries._fields))})",
                            list(zip(repeat(tenant), repeat(now), *entries)))
            return
        # SQLite: multi-row INSERTs that bind a column once when all entries share its value, and blobs as
        # bytearray (CPython's sqlite3 looks up an adapter for every bytes or None parameter, bytearray it
        # binds directly): under half the CPU per entry of executemany.
        columns = entries._asdict()
        shared = tuple(name for name, values in columns.items()
                       if name not in _UNIQUE_COLUMNS and values.count(values[0]) == len(values))
        varying = tuple(name for name in NewEntries._fields if name not in shared)
        head = [tenant, now, *(_bindable(name, columns[name][:1])[0] for name in shared)]
        bound = [_bindable(name, columns[name]) for name in varying]
        start, total = 0, len(entries.id)
        while start < total:
            count = min(MAX_INSERT_ROWS, 1 << (total - start).bit_length() - 1)  # few distinct statements
            end = start + count
            cur.execute(_insert_rows(shared, varying, count),
                        [*head, *chain.from_iterable(zip(*(column[start:end] for column in bound), strict=True))])
            start = end

    def extend_expiry(self, cur: Cursor, updates: Sequence[tuple[int | None, str]]) -> None:
        cur.executemany("UPDATE tv_entries SET expire_us = ? WHERE id = ?", updates)

    def find_tokens(self, tenant: str, field: str, tokens: Sequence[str], now: int,
                    ids: dict[str, str] | None = None) -> dict[str, FoundEntry]:
        """A live entry for each token found (with its data key, in one consistent statement per look-up):
        through `ids` (token -> the entry id it names) first, then through the stored tokens."""
        found: dict[str, FoundEntry] = {}
        if ids:
            token_of = {entry_id: token for token, entry_id in ids.items()}
            for row in self._live_entries(tenant, field, "e.id", list(token_of), now):
                found[token_of[row[0]]] = FoundEntry(row[0], row[1], token_of[row[0]], *row[3:])
        rest = [t for t in tokens if t not in found]
        if rest:
            found.update((r[2], FoundEntry(*r)) for r in self._live_entries(tenant, field, "e.token", rest, now))
        return found

    def _live_entries(self, tenant: str, field: str, column: str, keys: Sequence[str], now: int) -> list[Any]:
        indexed = f" AND e.{INDEXED_TOKEN}" if column == "e.token" else ""
        return self.db.read(
            "SELECT e.id, e.field, e.token, e.data_key_id, e.nonce, e.ciphertext, k.key_name, k.wrapped "  # noqa: S608
            "FROM tv_entries e JOIN tv_data_keys k ON k.id = e.data_key_id WHERE e.tenant = ? AND e.field = ? "
            f"AND {column} IN ({placeholders(len(keys))}){indexed} AND (e.expire_us IS NULL OR e.expire_us > ?)",
            (tenant, field, *keys, now))

    def delete_tokens(self, cur: Cursor, tenant: str, field: str, tokens: Sequence[str],
                      ids: Sequence[str] = ()) -> int:
        """Deletes the entries of these stored tokens and of these entry ids (tokens that name them)."""
        count = 0
        for where, keys in ((f"token IN ({placeholders(len(tokens))}) AND {INDEXED_TOKEN}", tokens),
                            (f"id IN ({placeholders(len(ids))})", ids)):
            if not keys:
                continue
            cur.execute(f"SELECT COUNT(*) FROM tv_entries WHERE tenant = ? AND field = ? AND {where}",  # noqa: S608
                        (tenant, field, *keys))
            count += int(cur.fetchone()[0])
            cur.execute(f"DELETE FROM tv_entries WHERE tenant = ? AND field = ? AND {where}",  # noqa: S608
                        (tenant, field, *keys))
        return count

    def forget_subject(self, cur: Cursor, tenant: str, field: str, subject_hash: bytes) -> tuple[int, list[str]]:
        """Deletes a subject's KEK record, entries and data keys in one field: (entries, data key ids). The KEK
        row goes first: it waits for writers holding it (see stale_subject_keys), whose entries are then seen."""
        cur.execute("DELETE FROM tv_subject_keks WHERE tenant = ? AND field = ? AND subject_hash = ?",
                    (tenant, field, subject_hash))
        # The length term lets SQLite use the partial subject index (subject hashes are never empty here).
        where = "tenant = ? AND field = ? AND subject_hash = ? AND length(subject_hash) > 0"
        cur.execute(f"SELECT COUNT(*) FROM tv_entries WHERE {where}", (tenant, field, subject_hash))  # noqa: S608
        entries = int(cur.fetchone()[0])
        cur.execute(f"DELETE FROM tv_entries WHERE {where}", (tenant, field, subject_hash))  # noqa: S608
        cur.execute("SELECT id FROM tv_data_keys WHERE tenant = ? AND field = ? AND subject_hash = ?",
                    (tenant, field, subject_hash))
        keys = [str(r[0]) for r in cur.fetchall()]
        cur.execute("DELETE FROM tv_data_keys WHERE tenant = ? AND field = ? AND subject_hash = ?",
                    (tenant, field, subject_hash))
        return entries, keys

    def purge_expired(self, now: int) -> int:
        with self.db.transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM tv_entries WHERE expire_us <= ?", (now,))
            count = int(cur.fetchone()[0])
            cur.execute("DELETE FROM tv_entries WHERE expire_us <= ?", (now,))
            cur.execute("DELETE FROM tv_requests WHERE create_us <= ?", (now - REQUEST_RETENTION_US,))
            return count

    def count_entries(self, tenant: str | None = None) -> int:
        if tenant is None:
            return int(self.db.read("SELECT COUNT(*) FROM tv_entries")[0][0])
        return int(self.db.read("SELECT COUNT(*) FROM tv_entries WHERE tenant = ?", (tenant,))[0][0])

    # --- idempotency ----------------------------------------------------------------------------------

    def replay(self, cur: Cursor, tenant: str, method: str, request_id: str) -> tuple[bytes, bytes] | None:
        """(fingerprint, response) of an earlier call with this request_id, within the retention window."""
        cur.execute("SELECT fingerprint, response, create_us FROM tv_requests WHERE tenant = ? AND method = ? AND "
                    "request_id = ?", (tenant, method, request_id))
        row = cur.fetchone()
        if row is None or int(row[2]) <= now_us() - REQUEST_RETENTION_US:
            return None
        return bytes(row[0]), bytes(row[1])

    def remember(self, cur: Cursor, tenant: str, method: str, request_id: str, fingerprint: bytes,
                 response: bytes) -> None:
        cur.execute("DELETE FROM tv_requests WHERE tenant = ? AND method = ? AND request_id = ?",
                    (tenant, method, request_id))
        cur.execute("INSERT INTO tv_requests (tenant, method, request_id, fingerprint, response, create_us) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (tenant, method, request_id, fingerprint, response, now_us()))

    # --- rotations ------------------------------------------------------------------------------------

    def insert_rotation(self, cur: Cursor, tenant: str, rotation_id: str, body: dict[str, Any], request_id: str,
                        lease: Lease) -> None:
        cur.execute("INSERT INTO tv_rotations (tenant, id, body, state, entries_total, entries_done, create_us, "
                    "request_id, lease_owner, lease_expire_us) VALUES (?, ?, ?, 'PENDING', 0, 0, ?, ?, ?, ?)",
                    (tenant, rotation_id, json.dumps(body), body["create_us"], request_id or None, lease.owner,
                     lease.until_us))

    def running_rotations(self, cur: Cursor, tenant: str) -> list[tuple[str, list[str]]]:
        cur.execute("SELECT id, body FROM tv_rotations WHERE tenant = ? AND state IN ('PENDING', 'RUNNING')",
                    (tenant,))
        return [(r[0], json.loads(r[1])["fields"]) for r in cur.fetchall()]

    def get_rotation(self, tenant: str, rotation_id: str) -> tuple[dict[str, Any], str, int, int] | None:
        rows = self.db.read("SELECT body, state, entries_total, entries_done FROM tv_rotations WHERE tenant = ? AND "
                            "id = ?", (tenant, rotation_id))
        if not rows:
            return None
        body, state, total, done = rows[0]
        return json.loads(body), state, int(total), int(done)

    def list_rotations(self, tenant: str, before: str, limit: int) -> list[str]:
        """Rotation ids, newest first (ids sort by creation time); `before` is the last id of the last page."""
        if before:
            rows = self.db.read("SELECT id FROM tv_rotations WHERE tenant = ? AND id < ? ORDER BY id DESC LIMIT ?",
                                (tenant, before, limit))
        else:
            rows = self.db.read("SELECT id FROM tv_rotations WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                                (tenant, limit))
        return [r[0] for r in rows]

    def _locked_rotation(self, cur: Cursor, tenant: str, rotation_id: str,
                         lease: Lease | None) -> tuple[str, str] | None:
        """(body, state) of a rotation, locked; with `lease`, renews it, or raises LeaseLost when another process
        holds the rotation now."""
        cur.execute(self.db.locking("SELECT body, state, lease_owner FROM tv_rotations WHERE tenant = ? AND id = ?"),
                    (tenant, rotation_id))
        row = cur.fetchone()
        if row is None:
            return None
        if lease is not None:
            if row[2] != lease.owner:
                raise LeaseLost
            cur.execute("UPDATE tv_rotations SET lease_expire_us = ? WHERE tenant = ? AND id = ?",
                        (lease.until_us, tenant, rotation_id))
        return str(row[0]), str(row[1])

    def set_rotation(self, tenant: str, rotation_id: str, *, state: str | None = None,
                     body_updates: dict[str, Any] | None = None, only_from: Sequence[str] = (),
                     lease: Lease | None = None) -> str:
        """Updates a rotation; with `only_from`, only while its state is one of those; with `lease`, only while
        this process holds it (LeaseLost otherwise), renewing it. Returns the state."""
        with self.db.transaction() as cur:
            row = self._locked_rotation(cur, tenant, rotation_id, lease)
            if row is None:
                return ""
            if only_from and row[1] not in only_from:
                return row[1]
            body = json.loads(row[0])
            body.update(body_updates or {})
            cur.execute("UPDATE tv_rotations SET body = ?, state = ? WHERE tenant = ? AND id = ?",
                        (json.dumps(body), state or row[1], tenant, rotation_id))
            return state or row[1]

    def claim_abandoned_rotations(self, lease: Lease, now: int) -> list[tuple[str, str]]:
        """(tenant, id) of the active rotations whose lease expired (their process stopped), now leased to
        `lease.owner`: at most one process claims each."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT tenant, id FROM tv_rotations WHERE state IN ('PENDING', 'RUNNING') "
                                        "AND (lease_expire_us IS NULL OR lease_expire_us < ?)"), (now,))
            claimed = [(str(r[0]), str(r[1])) for r in cur.fetchall()]
            cur.executemany("UPDATE tv_rotations SET lease_owner = ?, lease_expire_us = ? WHERE tenant = ? AND id = ?",
                            [(lease.owner, lease.until_us, tenant, rotation_id) for tenant, rotation_id in claimed])
            return claimed

    def release_rotations(self, owner: str) -> None:
        """Lets other processes take over this process's rotations at once (it is stopping)."""
        with self.db.transaction() as cur:
            cur.execute("UPDATE tv_rotations SET lease_expire_us = 0 WHERE lease_owner = ? AND state IN "
                        "('PENDING', 'RUNNING')", (owner,))

    def retire_data_keys(self, tenant: str, rotation_id: str, fields: Sequence[str], lease: Lease) -> int:
        """Marks the fields' data keys retired by this rotation (new entries get new keys) and records how many
        entries are under them: the live keys, and those an ended (cancelled, failed) rotation retired but did
        not empty. Returns that count, the rotation's total."""
        if not fields:
            return 0
        with self.db.transaction() as cur:
            self._locked_rotation(cur, tenant, rotation_id, lease)
            cur.execute(f"UPDATE tv_data_keys SET rotation_id = ?, retired_us = COALESCE(retired_us, ?) WHERE "  # noqa: S608
                        f"tenant = ? AND field IN ({placeholders(len(fields))}) AND (retired_us IS NULL OR "
                        "rotation_id IS NULL OR rotation_id IN (SELECT id FROM tv_rotations WHERE tenant = ? AND "
                        "state NOT IN ('PENDING', 'RUNNING')))", (rotation_id, now_us(), tenant, *fields, tenant))
            cur.execute("SELECT COUNT(*) FROM tv_entries e JOIN tv_data_keys k ON k.id = e.data_key_id WHERE "
                        "k.rotation_id = ?", (rotation_id,))
            total = int(cur.fetchone()[0])
            cur.execute("UPDATE tv_rotations SET entries_total = ? WHERE tenant = ? AND id = ?",
                        (total, tenant, rotation_id))
            return total

    def entries_under(self, tenant: str, field: str, rotation_id: str,
                      limit: int) -> list[tuple[str, bytes, str, bytes, bytes, str, bytes]]:
        """(id, subject_hash, data_key_id, nonce, ciphertext, key_name, wrapped) of entries still under data
        keys this rotation retired."""
        return [(r[0], bytes(r[1]), r[2], bytes(r[3]), bytes(r[4]), r[5], bytes(r[6])) for r in self.db.read(
            "SELECT e.id, e.subject_hash, e.data_key_id, e.nonce, e.ciphertext, k.key_name, k.wrapped FROM "
            "tv_data_keys k JOIN tv_entries e ON e.data_key_id = k.id WHERE k.rotation_id = ? AND k.tenant = ? AND "
            "k.field = ? LIMIT ?", (rotation_id, tenant, field, limit))]

    def move_entries(self, tenant: str, rotation_id: str, lease: Lease,
                     moves: Sequence[tuple[str, bytes, bytes, str, str]]) -> bool:
        """Re-encrypted entries: (id, nonce, ciphertext, new data key, old data key), each applied where the entry
        is still under the old key, counted in the rotation's progress and renewing its lease, in one
        transaction. False (nothing moved) once the rotation is no longer RUNNING; LeaseLost."""
        with self.db.transaction() as cur:
            row = self._locked_rotation(cur, tenant, rotation_id, lease)
            if row is None or row[1] != "RUNNING":
                return False
            moved = 0
            for entry_id, nonce, ciphertext, new_key, old_key in moves:
                cur.execute("SELECT 1 FROM tv_entries WHERE id = ? AND data_key_id = ?", (entry_id, old_key))
                if cur.fetchone() is None:
                    continue  # deleted meanwhile
                cur.execute("UPDATE tv_entries SET data_key_id = ?, nonce = ?, ciphertext = ? WHERE id = ?",
                            (new_key, nonce, ciphertext, entry_id))
                moved += 1
            cur.execute("UPDATE tv_rotations SET entries_done = entries_done + ? WHERE tenant = ? AND id = ?",
                        (moved, tenant, rotation_id))
            return True

    def drop_unused_data_keys(self, rotation_id: str) -> None:
        """Destroys the data keys a rotation retired once no entry uses them (its last step)."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM tv_data_keys WHERE rotation_id = ? AND NOT EXISTS "
                        "(SELECT 1 FROM tv_entries e WHERE e.data_key_id = tv_data_keys.id)", (rotation_id,))
