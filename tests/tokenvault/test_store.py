"""Schema migrations keep earlier rows working: random tokens stored before migration 4 stay findable
through the (now partial) token index, and the planner still uses that index."""

from __future__ import annotations

from pathlib import Path

import pytest

from privmesh.runtime.db import Database
from privmesh.tokenvault import store as store_module
from privmesh.tokenvault.store import MIGRATIONS, Store


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
        assert store.schema_version == len(MIGRATIONS) == 4
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
