"""One small seam over SQLite (the embedded default) and PostgreSQL (production) for the services' stores.

SQL is written once with '?' placeholders; `Database.sql` rewrites it for psycopg. Every store does its
work in `transaction()`: a write transaction that takes the database's write lock first (BEGIN IMMEDIATE
on SQLite; callers add SELECT ... FOR UPDATE on PostgreSQL where they need a row lock), so concurrent
processes serialize instead of interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import psycopg

from privmesh.runtime.errors import Unavailable

Dialect = Literal["sqlite", "postgres"]
T = TypeVar("T")


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# SQLite's messages for a write its storage refused (Python 3.10's sqlite3 has no error codes yet).
_SQLITE_STORAGE_FAILURES = ("database or disk is full", "readonly database", "disk i/o error",
                            "unable to open database file")


class StorageUnavailable(Unavailable):
    """The storage refused the operation (a full, read-only or failing disk; a lost database connection):
    UNAVAILABLE, since a retry may succeed once an operator fixed it; the transaction was rolled back."""

    def __init__(self) -> None:
        super().__init__("STORAGE_UNAVAILABLE", "the service's storage cannot accept writes now; nothing was changed")


def _raise_storage_failure(exc: BaseException) -> None:
    if isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _SQLITE_STORAGE_FAILURES):
        raise StorageUnavailable() from exc


@contextmanager
def _storage_failures() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        _raise_storage_failure(exc)
        raise


class Database:
    """A connection guarded by a lock (stores run their statements in worker threads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self.dialect: Dialect
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            path = Path(url[len("sqlite:///"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            with _storage_failures():  # e.g. a read-only directory without the WAL's files: no start
                self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
                self._sqlite.execute("PRAGMA journal_mode=WAL")
                self._sqlite.execute("PRAGMA synchronous=NORMAL")
                self._sqlite.execute("PRAGMA foreign_keys=ON")
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgres"
            self._pg: psycopg.Connection[Any] | None = None
        else:
            raise ValueError("database must be sqlite:///<path> or postgresql://...")

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgres" else statement

    def locking(self, select: str) -> str:
        """`select` locking its rows until the transaction ends (SQLite's BEGIN IMMEDIATE already has)."""
        return f"{select} FOR UPDATE" if self.dialect == "postgres" else select

    def serialize(self, cur: Cursor, key: str) -> None:
        """Makes writers of `key` run one after another until the transaction ends: a row lock cannot stop two
        transactions that each count rows and then insert a new one (PostgreSQL: a transaction-scoped advisory
        lock on the key's hash; SQLite's BEGIN IMMEDIATE already serializes every writer)."""
        if self.dialect == "postgres":
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    @property
    def blob(self) -> str:
        return "BYTEA" if self.dialect == "postgres" else "BLOB"

    def _postgres(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed:
            self._pg = psycopg.connect(self.url, autocommit=False)
        return self._pg

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A write transaction; rolled back on any exception, so a failed operation changes nothing."""
        with self._lock:
            if self.dialect == "sqlite":
                cursor = self._sqlite.cursor()
                with _storage_failures():
                    cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteCursor(cursor)
                except BaseException as exc:
                    with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (disk full)
                        cursor.execute("ROLLBACK")
                    _raise_storage_failure(exc)
                    raise
                with _storage_failures():
                    try:
                        cursor.execute("COMMIT")
                    except sqlite3.Error:
                        with contextlib.suppress(sqlite3.Error):
                            cursor.execute("ROLLBACK")
                        raise
            else:
                conn = self._postgres()
                try:
                    with conn.transaction(), conn.cursor() as pg_cursor:
                        yield _PgCursor(pg_cursor, self)
                except psycopg.OperationalError as exc:
                    conn.close()
                    raise StorageUnavailable() from exc

    async def call_from_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a short store call from the event loop: inline on SQLite, whose commits are local and take
        microseconds (handing one to a worker thread and back costs more: about a fifth of a small RPC's
        server CPU, measured), in a worker thread on PostgreSQL, whose statements are network round trips."""
        if self.dialect == "sqlite":
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def read(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.transaction() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()

    def close(self) -> None:
        with self._lock:
            if self.dialect == "sqlite":
                self._sqlite.close()
            elif self._pg is not None:
                self._pg.close()


class _SqliteCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(sql, rows)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class _PgCursor:
    def __init__(self, cursor: psycopg.Cursor[Any], db: Database) -> None:
        self._cursor = cursor
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(self._db.sql(sql), tuple(params) or None)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cursor.executemany(self._db.sql(sql), rows)

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        return None if row is None else tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)

    def fetchall(self) -> list[Any]:
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in self._cursor.fetchall()]
