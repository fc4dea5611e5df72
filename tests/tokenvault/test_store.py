"""Schema migrations keep earlier rows working: random tokens stored before migration 4 stay findable
through the (now partial) token index, and the planner still uses that index. Batch inserts store every
column of every entry as given, on SQLite (multi-row statements) and PostgreSQL."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from privmesh.runtime.db import Database
from privmesh.tokenvault import store as store_module
from privmesh.tokenvault.store import MIGRATIONS, NewEntries, NewEntry, Store, new_entry_ids


def test_tokens_stored_before_migration_4_are_found_after_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite:///{tmp_path / 'vault.db'}")
    try:
        monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:3])
        assert Store(db).schema_version == 3
        with db.transaction() as cur:
            cur.execute("INSERT INTO tv_data_keys (id, tenant, field, key_name, key_version, wrapped, create_us) "
                        "VALUES ('k1', 'acme', 'name', 'keys/k', 1, x'00', 0)")
            cur.execute("INSERT INTO tv_entries (id, tenant, field, token, subject_hash, data_key_id, nonce, "
                        "ciphertext, create_us) VALUES ('e1', 'acme', 'name', 'tok_old', x'', 'k1', x'01', x'02', 0)")
        monkeypatch.undo()
        store = Store(db)
        assert store.schema_version == len(MIGRATIONS) == 7
        found = store.find_tokens("acme", "name", ["tok_old", "tok_other"], now=1)
        assert list(found) == ["tok_old"] and found["tok_old"].id == "e1"
        assert store.find_tokens("acme", "other", ["tok_old"], now=1) == {}
        plan = db.read("EXPLAIN QUERY PLAN SELECT id FROM tv_entries WHERE tenant = 'acme' AND field = 'name' "
                       f"AND token IN ('tok_old') AND {store_module.INDEXED_TOKEN}")
        assert any("tv_entries_token" in str(row) for row in plan)
        with db.transaction() as cur:
            assert store.delete_tokens(cur, "acme", "name", ["tok_old"]) == 1
        assert store.count_entries() == 0
    finally:
        db.close()


def entries(count: int, varied: bool) -> list[NewEntry]:
    """Entries whose optional columns are all alike (one shared parameter each) or differ between entries."""
    return [NewEntry(entry_id, f"f{n % 2}" if varied else "f", f"t{n}" if varied else "",
                     secrets.token_bytes(32) if varied and n % 3 else None, b"s" * (n % 2) if varied else b"",
                     f"k{n % 2}" if varied else "k", secrets.token_bytes(12), secrets.token_bytes(20 + n % 5),
                     (n if n % 2 else None) if varied else None)
            for n, entry_id in enumerate(new_entry_ids(count))]


@pytest.mark.parametrize("count", [1, 3, 513, 1000])  # one statement; several sizes; past the largest one
@pytest.mark.parametrize("varied", [False, True])
def test_batch_inserts_store_every_entry_exactly(tmp_path: Path, count: int, varied: bool) -> None:
    db = Database(f"sqlite:///{tmp_path / 'vault.db'}")
    try:
        assert_inserted(Store(db), entries(count, varied))
    finally:
        db.close()


def test_batch_inserts_on_postgres(postgres_db: str) -> None:
    db = Database(postgres_db)
    try:
        assert_inserted(Store(db), entries(5, True))
    finally:
        db.close()


def assert_inserted(store: Store, batch: list[NewEntry]) -> None:
    with store.db.transaction() as cur:
        store.insert_entries(cur, "acme", NewEntries.of(batch), 42)
        store.insert_entries(cur, "acme", NewEntries.of([]), 42)
    rows = store.db.read(f"SELECT {', '.join(NewEntry._fields)}, tenant, create_us FROM tv_entries ORDER BY id")
    assert [NewEntry(*row[:9]) for row in rows] == sorted(batch)
    assert {(row[9], row[10]) for row in rows} == {("acme", 42)}
    assert all(type(row[6]) is bytes and type(row[7]) is bytes for row in rows)
