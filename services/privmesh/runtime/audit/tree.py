"""A service's audit log as an RFC 6962 Merkle tree, persisted node by node next to the chain.

Every complete subtree's hash is stored once when its last leaf is appended (about 2n rows for n
entries, never updated), so a root, an inclusion proof or a consistency proof of any size is one indexed
read of at most ~2·log2(n) rows: nothing is loaded in proportion to the log. The leaf of entry `sequence`
is leaf_hash(entry_hash) at index sequence - 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from privmesh.runtime.audit import merkle
from privmesh.runtime.db import Cursor, Database

_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS audit_tree_no_update BEFORE UPDATE ON audit_tree "
    "BEGIN SELECT RAISE(ABORT, 'the audit tree is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_tree_no_delete BEFORE DELETE ON audit_tree "
    "BEGIN SELECT RAISE(ABORT, 'the audit tree is append-only'); END",
]
_POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION privmesh_audit_tree_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$f$ BEGIN RAISE EXCEPTION 'the audit tree is append-only'; END $f$",
    "CREATE OR REPLACE TRIGGER audit_tree_append_only BEFORE UPDATE OR DELETE ON audit_tree "
    "FOR EACH ROW EXECUTE FUNCTION privmesh_audit_tree_append_only()",
]


class MerkleTree:
    """The stored tree of one chain. Writes happen inside the caller's transaction (the chain's append)."""

    def __init__(self, db: Database, chain: str) -> None:
        self.db = db
        self.chain = chain

    def migrate(self, cur: Cursor) -> None:
        suffix = " WITHOUT ROWID" if self.db.dialect == "sqlite" else ""
        cur.execute("CREATE TABLE IF NOT EXISTS audit_tree (chain TEXT NOT NULL, level INTEGER NOT NULL, "
                    f"idx BIGINT NOT NULL, hash {self.db.blob} NOT NULL, PRIMARY KEY (chain, level, idx)){suffix}")
        for statement in _SQLITE_GUARDS if self.db.dialect == "sqlite" else _POSTGRES_GUARDS:
            cur.execute(statement)

    def _nodes(self, cur: Cursor, nodes: set[merkle.Node]) -> dict[merkle.Node, bytes]:
        if not nodes:
            return {}
        ordered = sorted(nodes)
        # one primary-key lookup per node (a row-value IN list is planned as a scan by SQLite)
        point = "SELECT level, idx, hash FROM audit_tree WHERE chain = ? AND level = ? AND idx = ?"
        cur.execute(" UNION ALL ".join([point] * len(ordered)), [v for node in ordered for v in (self.chain, *node)])
        found = {(int(level), int(idx)): bytes(digest) for level, idx, digest in cur.fetchall()}
        missing = nodes - found.keys()
        if missing:
            raise LookupError(f"the audit tree of {self.chain} lacks node {min(missing)}: it is not that large")
        return found

    def size(self, cur: Cursor) -> int:
        """The number of leaves (an index seek, not a count)."""
        cur.execute("SELECT MAX(idx) FROM audit_tree WHERE chain = ? AND level = 0", (self.chain,))
        last = cur.fetchone()[0]
        return 0 if last is None else int(last) + 1

    def append(self, cur: Cursor, size: int, leaves: Sequence[bytes]) -> bytes:
        """Appends leaf hashes to the tree of `size` leaves; returns the new root."""
        stored = self._nodes(cur, set(merkle.frontier_nodes(size)))
        frontier = merkle.Frontier(size, [stored[node] for node in merkle.frontier_nodes(size)])
        rows = [(self.chain, level, index, digest) for leaf in leaves for level, index, digest in frontier.append(leaf)]
        cur.executemany("INSERT INTO audit_tree (chain, level, idx, hash) VALUES (?, ?, ?, ?)", rows)
        return frontier.root()

    def root(self, cur: Cursor, size: int) -> bytes:
        nodes = merkle.frontier_nodes(size)
        stored = self._nodes(cur, set(nodes))
        return merkle.fold([stored[node] for node in nodes])

    def inclusion_proof(self, cur: Cursor, index: int, size: int) -> list[bytes]:
        ranges = merkle.inclusion_ranges(index, size)
        return merkle.proof_from_nodes(ranges, self._nodes(cur, merkle.ranges_nodes(ranges)))

    def consistency_proof(self, cur: Cursor, first: int, second: int) -> list[bytes]:
        ranges = merkle.consistency_ranges(first, second)
        return merkle.proof_from_nodes(ranges, self._nodes(cur, merkle.ranges_nodes(ranges)))

    def leaf(self, cur: Cursor, index: int) -> bytes:
        return self._nodes(cur, {(0, index)})[(0, index)]
