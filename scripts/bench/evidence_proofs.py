"""Merkle proofs of the audit log at 10 million entries, against the same proofs at 10 thousand.

Two chains are written into one SQLite database through the store's own tree code (MerkleTree.append,
100,000 leaves a transaction; the leaves are synthetic entry hashes, the audit_entries rows themselves are
not needed by a proof). Then, for each size, random inclusion proofs (leaf in the full tree) and consistency
proofs (random older size to the full size) are read from the database and verified with the RFC 9162
checks; the figures are medians in milliseconds.

Last line: `ratio: <inclusion-proof ms at 10M / inclusion-proof ms at 10k>`, the median of alternating
rounds. A proof reads ~log2(n) stored nodes through a B-tree of depth ~log(n), so the expected ratio is
about log2(10M)/log2(10k) = 1.75, and anything under ~3 means the cost grows with log n; a proof that
scanned or loaded the log would be ~1000 (the log is 1000 times larger).

Usage: .venv/bin/python scripts/bench/evidence_proofs.py [--entries 10000000] [--small 10000] [--proofs 500]
       [--db PATH (default: a temporary file; an existing file of the right sizes is reused)]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import print_ratio

from privmesh.runtime.audit import merkle
from privmesh.runtime.audit.tree import MerkleTree
from privmesh.runtime.db import Database

BATCH = 100_000


def build(db: Database, chain: str, entries: int) -> MerkleTree:
    tree = MerkleTree(db, chain)
    with db.transaction() as cur:
        tree.migrate(cur)
        size = tree.size(cur)
    if size == entries:
        print(f"{chain}: reusing {entries:,} leaves")
        return tree
    if size:
        raise SystemExit(f"{chain} holds {size} leaves, not {entries}: use another --db")
    start = time.perf_counter()
    while size < entries:
        count = min(BATCH, entries - size)
        leaves = [merkle.leaf_hash(hashlib.sha256(i.to_bytes(8, "big")).digest()) for i in range(size, size + count)]
        with db.transaction() as cur:
            tree.append(cur, size, leaves)
        size += count
    seconds = time.perf_counter() - start
    print(f"{chain}: {entries:,} leaves built in {seconds:.1f} s ({entries / seconds:,.0f} leaves/s)")
    return tree


def time_proofs(db: Database, tree: MerkleTree, size: int, proofs: int, rng: random.Random) -> tuple[float, float]:
    with db.transaction() as cur:
        root = tree.root(cur, size)
    inclusion, consistency = [], []
    for _ in range(proofs):
        index, first = rng.randrange(size), rng.randrange(1, size)
        leaf = merkle.leaf_hash(hashlib.sha256(index.to_bytes(8, "big")).digest())
        start = time.perf_counter()
        with db.transaction() as cur:
            path = tree.inclusion_proof(cur, index, size)
        assert merkle.verify_inclusion(index, size, leaf, path, root)
        inclusion.append(time.perf_counter() - start)
        start = time.perf_counter()
        with db.transaction() as cur:
            old_root = tree.root(cur, first)
            proof = tree.consistency_proof(cur, first, size)
        assert merkle.verify_consistency(first, size, old_root, root, proof)
        consistency.append(time.perf_counter() - start)
    return statistics.median(inclusion) * 1000, statistics.median(consistency) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--proofs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evidence-bench-") as tmp:
        path = args.db or Path(tmp) / "tree.db"
        db = Database(f"sqlite:///{path}")
        small, large = build(db, "small", args.small), build(db, "large", args.entries)
        print(f"database: {path.stat().st_size / 2**20:,.0f} MiB")
        rng = random.Random(6962)
        ratios = []
        print(f"{'round':>5} {'incl ms 10k':>12} {'incl ms big':>12} {'cons ms 10k':>12} {'cons ms big':>12}")
        for round_no in range(args.rounds):
            s_incl, s_cons = time_proofs(db, small, args.small, args.proofs, rng)
            l_incl, l_cons = time_proofs(db, large, args.entries, args.proofs, rng)
            print(f"{round_no:>5} {s_incl:>12.3f} {l_incl:>12.3f} {s_cons:>12.3f} {l_cons:>12.3f}")
            ratios.append(l_incl / s_incl)
        db.close()
        print_ratio(ratios)


if __name__ == "__main__":
    main()
