"""The audit tree against an independent oracle: RFC 6962's recursive definitions (MTH, PATH, PROOF,
transcribed below straight from §2.1) and the Certificate Transparency reference vectors. Proofs come from
the stored tree (SQLite and a real PostgreSQL) and are checked by the RFC 9162 verifiers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit.chain import Event
from privmesh.runtime.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from privmesh.runtime.audit.store import AuditStore
from privmesh.runtime.audit.tree import MerkleTree
from privmesh.runtime.db import Database

# The CT reference leaves and the roots of their first n (RFC 6962 test data used by every CT implementation).
CT_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
CT_INCLUSION = {(0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                         "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                         "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]}
CT_CONSISTENCY = {(1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                           "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                           "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
                  (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                           "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                           "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
                  (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                           "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]}


# --- RFC 6962 §2.1, literally -------------------------------------------------------------------------------

def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


# -------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'tree.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    db = Database(url)
    yield db
    db.close()


def _tree(db: Database, data: list[bytes], batches: list[int]) -> MerkleTree:
    tree = MerkleTree(db, "t")
    with db.transaction() as cur:
        tree.migrate(cur)
    size = 0
    for batch in batches:
        with db.transaction() as cur:
            tree.append(cur, size, [leaf_hash(x) for x in data[size:size + batch]])
        size += batch
    return tree


def test_roots_and_proofs_match_the_ct_reference_vectors(database: Database) -> None:
    tree = _tree(database, CT_LEAVES, [3, 1, 4])
    with database.transaction() as cur:
        assert [tree.root(cur, n).hex() for n in range(9)] == CT_ROOTS
        for (index, size), expected in CT_INCLUSION.items():
            assert [h.hex() for h in tree.inclusion_proof(cur, index, size)] == expected
        for (first, second), expected in CT_CONSISTENCY.items():
            assert [h.hex() for h in tree.consistency_proof(cur, first, second)] == expected


def test_every_proof_equals_rfc_6962_and_verifies(database: Database) -> None:
    data = [f"entry {i}".encode() for i in range(37)]
    tree = _tree(database, data, [1, 6, 9, 1, 20])
    with database.transaction() as cur:
        for n in range(1, 38):
            root = tree.root(cur, n)
            assert root == mth(data[:n])
            for m in range(n):
                proof = tree.inclusion_proof(cur, m, n)
                assert proof == path(m, data[:n])
                assert verify_inclusion(m, n, leaf_hash(data[m]), proof, root)
                assert not verify_inclusion(m, n, leaf_hash(b"forged"), proof, root)
                if proof:
                    assert not verify_inclusion(m, n, leaf_hash(data[m]), proof[:-1], root)
            for m in range(1, n + 1):
                proof = tree.consistency_proof(cur, m, n)
                assert proof == (subproof(m, data[:n], True) if m < n else [])
                assert verify_consistency(m, n, mth(data[:m]), root, proof)
                if m < n:
                    assert not verify_consistency(m, n, mth(data[1:m + 1]), root, proof)
                    assert not verify_consistency(m, n, mth(data[:m]), root, proof[1:])


def test_proofs_beyond_the_tree_are_refused(database: Database) -> None:
    tree = _tree(database, CT_LEAVES, [8])
    with database.transaction() as cur, pytest.raises(LookupError):
        tree.inclusion_proof(cur, 3, 9)
    with database.transaction() as cur, pytest.raises(ValueError):
        tree.inclusion_proof(cur, 8, 8)


def test_the_tree_is_append_only(database: Database) -> None:
    _tree(database, CT_LEAVES, [8])
    for statement in ("UPDATE audit_tree SET hash = hash WHERE level = 0", "DELETE FROM audit_tree WHERE level = 0"):
        with pytest.raises(Exception, match="append-only"), database.transaction() as cur:
            cur.execute(statement)


def test_the_store_keeps_the_tree_and_signed_checkpoints_in_step(database: Database) -> None:
    key = Ed25519PrivateKey.generate()
    store = AuditStore(database, "svc", key, checkpoint_every=4, origin="example.test/audit/svc")
    store.append_batch([Event("svc", "p", "Op", f"r/{i}") for i in range(6)])
    store.append_batch([Event("svc", "p", "Op", f"r/{i}") for i in range(3)])
    store.checkpoint_head()
    leaves = [e.entry_hash for e in store.entries(0, 100)]
    sizes = [size for size, _ in store.tlog.checkpoints(0, 100)]
    assert sizes == [4, 8, 9]
    for size, note in store.tlog.checkpoints(0, 100):
        parsed = notes.parse_note(note)
        assert notes.signed_by(parsed, "example.test/audit/svc", key.public_key())
        head = notes.parse_checkpoint(parsed.text)
        assert (head.origin, head.size, head.root) == ("example.test/audit/svc", size, mth(leaves[:size]))
    assert not notes.signed_by(notes.parse_note(store.tlog.checkpoint(9) or ""), "example.test/audit/svc",
                               Ed25519PrivateKey.generate().public_key())


def test_a_log_written_before_the_tree_existed_is_backfilled(database: Database) -> None:
    key = Ed25519PrivateKey.generate()
    store = AuditStore(database, "svc", key, checkpoint_every=100)
    store.append_batch([Event("svc", "p", "Op", f"r/{i}") for i in range(25)])
    with database.transaction() as cur:
        cur.execute("DROP TABLE audit_tree")
    reopened = AuditStore(database, "svc", key, checkpoint_every=100)
    assert reopened.tlog.root(25) == mth([e.entry_hash for e in store.entries(0, 100)])
