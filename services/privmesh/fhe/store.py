"""Persistence: sessions and run-time models in SQLite or PostgreSQL (the runtime's Database), key parts as files.

Key uploads reach hundreds of MB, so their bytes live in files under `key_dir` (one directory per session,
written under a temporary name and renamed into place only once the keys passed every check) and the database
holds what describes them: sizes, digests, the key-pair tag, expiry. Public and evaluation keys only: there
is no secret key anywhere in this state.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from privmesh.runtime.db import Database

# One fhe_sessions row in _COLUMNS order: the TEXT and BIGINT columns as both drivers return them.
_SessionRow = tuple[str, str, str, str, str, str, str, int, int, int, int | None, str, str]


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class KeyPart:
    kind: str  # privmesh.fhe.worker's part names
    size: int
    sha256: bytes


@dataclass(frozen=True)
class Session:
    session_id: str
    model_id: str
    model_etag: str
    owner: str
    key_tag: str
    key_parts: tuple[KeyPart, ...]
    public_key_fingerprint: str
    create_us: int
    expire_us: int
    inference_count: int = 0
    last_infer_us: int | None = None
    request_id: str = ""
    request_digest: str = ""

    @property
    def name(self) -> str:
        return f"sessions/{self.session_id}"


class KeyTagInUse(Exception):
    """Another live session already uses this key pair."""


class SessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS fhe_sessions (session_id TEXT PRIMARY KEY, "
                        "model_id TEXT NOT NULL, model_etag TEXT NOT NULL, owner TEXT NOT NULL, "
                        "key_tag TEXT NOT NULL, key_parts TEXT NOT NULL, "
                        "public_key_fingerprint TEXT NOT NULL, create_us BIGINT NOT NULL, expire_us BIGINT NOT NULL, "
                        "inference_count BIGINT NOT NULL DEFAULT 0, last_infer_us BIGINT, request_id TEXT NOT NULL, "
                        "request_digest TEXT NOT NULL)")
            cur.execute("CREATE INDEX IF NOT EXISTS fhe_sessions_owner ON fhe_sessions (owner, expire_us)")
            cur.execute("CREATE INDEX IF NOT EXISTS fhe_sessions_tag ON fhe_sessions (key_tag)")

    _COLUMNS = ("session_id, model_id, model_etag, owner, key_tag, key_parts, public_key_fingerprint, create_us, "
                "expire_us, inference_count, last_infer_us, request_id, request_digest")

    @staticmethod
    def _row(row: _SessionRow) -> Session:
        parts = tuple(KeyPart(p["kind"], int(p["size"]), bytes.fromhex(p["sha256"])) for p in json.loads(row[5]))
        return Session(row[0], row[1], row[2], row[3], row[4], parts, row[6], row[7], row[8], row[9], row[10],
                       row[11], row[12])

    def create(self, session: Session) -> None:
        """Inserts the session unless another live session has its key tag (KeyTagInUse)."""
        parts = json.dumps([{"kind": p.kind, "size": p.size, "sha256": p.sha256.hex()} for p in session.key_parts])
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT session_id FROM fhe_sessions WHERE key_tag = ? AND expire_us > ?"),
                        (session.key_tag, now_us()))
            if cur.fetchone() is not None:
                raise KeyTagInUse
            cur.execute(f"INSERT INTO fhe_sessions ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                        (session.session_id, session.model_id, session.model_etag, session.owner, session.key_tag,
                         parts, session.public_key_fingerprint, session.create_us, session.expire_us, 0, None,
                         session.request_id, session.request_digest))

    def get(self, session_id: str) -> Session | None:
        rows = self.db.read(f"SELECT {self._COLUMNS} FROM fhe_sessions WHERE session_id = ?",  # noqa: S608
                            (session_id,))
        return self._row(rows[0]) if rows else None

    def by_request_id(self, owner: str, request_id: str) -> Session | None:
        rows = self.db.read(f"SELECT {self._COLUMNS} FROM fhe_sessions WHERE owner = ? AND request_id = ?",  # noqa: S608
                            (owner, request_id))
        return self._row(rows[0]) if rows else None

    def live_count(self, owner: str) -> int:
        return int(self.db.read("SELECT COUNT(*) FROM fhe_sessions WHERE owner = ? AND expire_us > ?",
                                (owner, now_us()))[0][0])

    def record_inference(self, session_id: str, at_us: int) -> None:
        with self.db.transaction() as cur:
            cur.execute("UPDATE fhe_sessions SET inference_count = inference_count + 1, last_infer_us = ? "
                        "WHERE session_id = ?", (at_us, session_id))

    def delete(self, session_id: str) -> bool:
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT session_id FROM fhe_sessions WHERE session_id = ?"), (session_id,))
            if cur.fetchone() is None:
                return False
            cur.execute("DELETE FROM fhe_sessions WHERE session_id = ?", (session_id,))
            return True

    def expired(self, before_us: int) -> list[str]:
        return [str(r[0]) for r in self.db.read("SELECT session_id FROM fhe_sessions WHERE expire_us < ?",
                                                  (before_us,))]


class KeyFiles:
    """Each session's key parts as files: `<root>/<session>/<part>.bin`; uploads land in `<root>/.incoming`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for leftover in self.incoming.iterdir():  # uploads interrupted by a restart
            shutil.rmtree(leftover, ignore_errors=True)

    def new_upload(self) -> Path:
        path = self.incoming / secrets.token_hex(16)
        path.mkdir(mode=0o700)
        return path

    @staticmethod
    def part_path(directory: Path, kind: str) -> Path:
        return directory / f"{kind}.bin"

    def commit(self, upload: Path, session_id: str) -> Path:
        target = self.root / session_id
        upload.rename(target)
        return target

    def parts(self, session: Session) -> dict[str, str]:
        directory = self.root / session.session_id
        return {p.kind: str(self.part_path(directory, p.kind)) for p in session.key_parts}

    def exists(self, session_id: str) -> bool:
        return (self.root / session_id).is_dir()

    def discard(self, directory_or_session: Path | str) -> None:
        path = directory_or_session if isinstance(directory_or_session, Path) else self.root / directory_or_session
        shutil.rmtree(path, ignore_errors=True)


class ModelStore:
    """Models registered at run time (CreateModel), as their model files."""

    def __init__(self, db: Database) -> None:
        self.db = db
        blob = db.blob
        with db.transaction() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS fhe_models (model_id TEXT PRIMARY KEY, "
                        f"model_file {blob} NOT NULL, create_us BIGINT NOT NULL)")

    def add(self, model_id: str, model_file: bytes, create_us: int) -> bool:
        """Whether it was added (False when the id is taken)."""
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT model_id FROM fhe_models WHERE model_id = ?"), (model_id,))
            if cur.fetchone() is not None:
                return False
            cur.execute("INSERT INTO fhe_models (model_id, model_file, create_us) VALUES (?, ?, ?)",
                        (model_id, model_file, create_us))
            return True

    def all(self) -> list[tuple[str, bytes, int]]:
        return [(str(r[0]), bytes(r[1]), int(r[2])) for r in
                self.db.read("SELECT model_id, model_file, create_us FROM fhe_models ORDER BY model_id")]

    def get(self, model_id: str) -> tuple[bytes, int] | None:
        rows = self.db.read("SELECT model_file, create_us FROM fhe_models WHERE model_id = ?", (model_id,))
        return (bytes(rows[0][0]), int(rows[0][1])) if rows else None

    def delete(self, model_id: str) -> None:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM fhe_models WHERE model_id = ?", (model_id,))
