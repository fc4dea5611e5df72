"""Tamper detection on stored audit chains, in SQLite and in a real PostgreSQL: every kind of change to
past entries is found by verification, and the store itself refuses UPDATE and DELETE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.runtime.audit.chain import Event, Finding, entry_hash, sign_checkpoint, verify_log
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.db import Database

KEY = Ed25519PrivateKey.generate()
ENTRIES = 12


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> AuditStore:
    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    db = Database(url)
    request.addfinalizer(db.close)
    store = AuditStore(db, "svc", KEY, checkpoint_every=4)
    store.append_batch([Event("svc", f"spiffe://t/ns/n/sa/u{i}", "Op", f"things/{i}", "SUCCESS", {"n": str(i)})
                        for i in range(1, ENTRIES + 1)])
    return store


def verify(store: AuditStore) -> Finding | None:
    head = store.checkpoint_head()
    return verify_log("svc", store.entries(0, 1000), store.checkpoints(0, 1000), head, KEY.public_key())


def raw(store: AuditStore, *statements: str | tuple[str, tuple[object, ...]]) -> None:
    """Changes rows behind the service's back, as an attacker with access to the database would."""
    with store.db.transaction() as cur:
        if store.db.dialect == "sqlite":
            cur.execute("DROP TRIGGER audit_entries_no_update")
            cur.execute("DROP TRIGGER audit_entries_no_delete")
        else:
            cur.execute("DROP TRIGGER audit_entries_append_only ON audit_entries")
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, ())
            cur.execute(sql, params)


def test_intact_log_verifies(store: AuditStore) -> None:
    assert verify(store) is None
    assert [c.sequence for c in store.checkpoints(0, 100)][:3] == [4, 8, 12]


def test_store_refuses_update_and_delete(store: AuditStore) -> None:
    for statement in ("UPDATE audit_entries SET principal = 'mallory' WHERE sequence = 3",
                      "DELETE FROM audit_entries WHERE sequence = 3"):
        with pytest.raises(Exception, match="append-only"), store.db.transaction() as cur:
            cur.execute(statement)
    assert verify(store) is None


def _shift_up_from(seq: int) -> list[str | tuple[str, tuple[object, ...]]]:
    return [f"UPDATE audit_entries SET sequence = sequence + 1 WHERE sequence = {s}"
            for s in range(ENTRIES, seq - 1, -1)]


def _forged_row(sequence: int, previous: bytes) -> tuple[str, tuple[object, ...]]:
    event = Event("svc", "spiffe://t/ns/n/sa/mallory", "Op", "things/forged", "SUCCESS", {})
    digest = entry_hash(sequence, 1, event, previous)
    return ("INSERT INTO audit_entries (chain, sequence, time_us, principal, operation, resource, outcome, details, "
            "previous_hash, entry_hash) VALUES ('svc', ?, 1, ?, 'Op', 'things/forged', 'SUCCESS', '{}', ?, ?)",
            (sequence, event.principal, previous, digest))


TAMPERINGS: dict[str, tuple[Callable[[AuditStore], list], int, str]] = {  # type: ignore[type-arg]
    "modified": (lambda s: ["UPDATE audit_entries SET principal = 'mallory' WHERE sequence = 3"], 3, "modified"),
    "details modified": (lambda s: ["UPDATE audit_entries SET details = '{\"n\": \"99\"}' WHERE sequence = 7"],
                         7, "modified"),
    "deleted": (lambda s: ["DELETE FROM audit_entries WHERE sequence = 3"], 3, "removed, inserted or moved"),
    "inserted": (lambda s: [*_shift_up_from(4), _forged_row(4, s.entries(2, 1)[0].entry_hash)], 5, "does not link"),
    "reordered": (lambda s: ["UPDATE audit_entries SET sequence = -1 WHERE sequence = 3",
                             "UPDATE audit_entries SET sequence = 3 WHERE sequence = 4",
                             "UPDATE audit_entries SET sequence = 4 WHERE sequence = -1"], 3, "does not link"),
    "truncated": (lambda s: ["DELETE FROM audit_entries WHERE sequence > 10"], 11, "removed from the end"),
}


@pytest.mark.parametrize("kind", list(TAMPERINGS))
def test_tampering_is_detected_and_the_first_bad_entry_named(store: AuditStore, kind: str) -> None:
    make, first_bad, words = TAMPERINGS[kind]
    head_before = store.checkpoint_head()
    raw(store, *make(store))
    finding = verify_log("svc", store.entries(0, 1000), store.checkpoints(0, 1000), head_before, KEY.public_key())
    assert finding is not None
    assert finding.sequence == first_bad
    assert words in finding.message


def test_chain_rewritten_with_recomputed_hashes_is_caught_by_signed_checkpoints(store: AuditStore) -> None:
    head_before = store.checkpoint_head()
    entries = store.entries(0, 1000)
    previous = entries[5].previous_hash  # rewrite from entry 6 on, recomputing every hash
    statements: list[str | tuple[str, tuple[object, ...]]] = []
    for entry in entries[5:]:
        event = Event("svc", "spiffe://t/ns/n/sa/mallory", entry.operation, entry.resource, entry.outcome,
                      entry.details)
        digest = entry_hash(entry.sequence, entry.time_us, event, previous)
        statements.append(("UPDATE audit_entries SET principal = ?, previous_hash = ?, entry_hash = ? "
                           "WHERE sequence = ?", (event.principal, previous, digest, entry.sequence)))
        previous = digest
    raw(store, *statements)
    finding = verify_log("svc", store.entries(0, 1000), store.checkpoints(0, 1000), head_before, KEY.public_key())
    assert finding is not None
    assert finding.sequence == 5  # the rewrite lies after the intact checkpoint at 4
    assert "rewritten" in finding.message


def test_checkpoint_signed_by_another_key_is_rejected(store: AuditStore) -> None:
    entries = store.entries(0, 1000)
    forged_head = sign_checkpoint(Ed25519PrivateKey.generate(), "svc", len(entries), entries[-1].entry_hash, 1)
    finding = verify_log("svc", entries, store.checkpoints(0, 100), forged_head, KEY.public_key())
    assert finding is not None and "signature" in finding.message


def test_entries_appended_after_the_signed_head_are_reported(store: AuditStore) -> None:
    head = store.checkpoint_head()
    store.append_batch([Event("svc", "p", "Op")])
    finding = verify_log("svc", store.entries(0, 1000), store.checkpoints(0, 1000), head, KEY.public_key())
    assert finding is not None and finding.sequence == ENTRIES + 1


def test_failed_batch_leaves_the_chain_unchanged(store: AuditStore) -> None:
    with pytest.raises(ValueError):
        store.append_batch([Event("svc", "p", "Op"), Event("svc", "p", "Op", outcome="MAYBE")])
    assert len(store.entries(0, 1000)) == ENTRIES
    store.append_batch([Event("svc", "p", "Op")])
    assert verify(store) is None
