"""Registered datasets (the owner's declarations), in SQLite or PostgreSQL through the runtime's Database."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from privmesh.dpgateway.schema import Accounting, Column, ColumnType, DataFormat, DatasetSpec, Engine, Source
from privmesh.runtime.db import Database


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class StoredDataset:
    spec: DatasetSpec
    uid: str
    etag: str
    create_us: int


def encode_spec(spec: DatasetSpec) -> str:
    return json.dumps({
        "source": {"uri": spec.source.uri, "format": spec.source.format.value, "delimiter": spec.source.delimiter,
                   "headerless": spec.source.headerless},
        "columns": [{"name": c.name, "type": c.type.value, "nullable": c.nullable,
                     "bounds": list(c.bounds) if c.bounds else None, "categories": list(c.categories),
                     "fill_value": c.fill_value, "description": c.description} for c in spec.columns],
        "privacy_unit_column": spec.privacy_unit_column, "max_contributions": spec.max_contributions,
        "max_groups": spec.max_groups, "accounting": spec.accounting.value, "max_rows": spec.max_rows,
        "description": spec.description, "engine": spec.engine.value,
    }, sort_keys=True)


def decode_spec(dataset_id: str, body: str) -> DatasetSpec:
    data: dict[str, Any] = json.loads(body)
    src = data["source"]
    columns = tuple(Column(c["name"], ColumnType(c["type"]), c["nullable"],
                           tuple(c["bounds"]) if c["bounds"] else None, tuple(c["categories"]), c["fill_value"],
                           c["description"]) for c in data["columns"])
    return DatasetSpec(dataset_id, Source(src["uri"], DataFormat(src["format"]), src["delimiter"], src["headerless"]),
                       columns, data["privacy_unit_column"], data["max_contributions"], data["max_groups"],
                       Accounting(data["accounting"]), data["max_rows"], data["description"],
                       Engine(data.get("engine", Engine.POLARS.value)))


class DatasetExists(Exception):
    pass


class EtagMismatch(Exception):
    pass


class DatasetStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.transaction() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS dp_datasets (dataset_id TEXT PRIMARY KEY, uid TEXT NOT NULL, "
                        "body TEXT NOT NULL, etag TEXT NOT NULL, create_us BIGINT NOT NULL)")

    def create(self, spec: DatasetSpec) -> StoredDataset:
        stored = StoredDataset(spec, secrets.token_hex(16), secrets.token_hex(8), now_us())
        with self.db.transaction() as cur:
            cur.execute("SELECT 1 FROM dp_datasets WHERE dataset_id = ?", (spec.dataset_id,))
            if cur.fetchone() is not None:
                raise DatasetExists
            cur.execute("INSERT INTO dp_datasets (dataset_id, uid, body, etag, create_us) VALUES (?, ?, ?, ?, ?)",
                        (spec.dataset_id, stored.uid, encode_spec(spec), stored.etag, stored.create_us))
        return stored

    def get(self, dataset_id: str) -> StoredDataset | None:
        rows = self.db.read("SELECT body, uid, etag, create_us FROM dp_datasets WHERE dataset_id = ?", (dataset_id,))
        if not rows:
            return None
        body, uid, etag, created = rows[0]
        return StoredDataset(decode_spec(dataset_id, body), uid, etag, int(created))

    def list(self, after: str, limit: int) -> list[StoredDataset]:
        rows = self.db.read("SELECT dataset_id, body, uid, etag, create_us FROM dp_datasets WHERE dataset_id > ? "
                            "ORDER BY dataset_id LIMIT ?", (after, limit))
        return [StoredDataset(decode_spec(r[0], r[1]), r[2], r[3], int(r[4])) for r in rows]

    def delete(self, dataset_id: str, expected_etag: str) -> bool:
        with self.db.transaction() as cur:
            cur.execute(self.db.locking("SELECT etag FROM dp_datasets WHERE dataset_id = ?"), (dataset_id,))
            row = cur.fetchone()
            if row is None:
                return False
            if expected_etag and not secrets.compare_digest(row[0], expected_etag):
                raise EtagMismatch
            cur.execute("DELETE FROM dp_datasets WHERE dataset_id = ?", (dataset_id,))
            return True
