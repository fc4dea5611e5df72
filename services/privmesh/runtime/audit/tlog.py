"""The transparency-log view of a service's audit chain: its Merkle tree, its signed checkpoints (C2SP
notes) and the witnesses' cosignatures on them, stored beside the chain in the same database.

The chain's store calls `append` and `sign` inside its own transactions, so the tree always covers
exactly the chain's entries; the read methods serve proofs and receipts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privmesh.runtime.audit import checkpoint as notes
from privmesh.runtime.audit import merkle
from privmesh.runtime.audit.tree import MerkleTree
from privmesh.runtime.db import Cursor, Database

BACKFILL_CHUNK = 10_000


@dataclass(frozen=True)
class Proof:
    """A checkpoint (note with every cosignature) and a proof against it."""

    checkpoint: str
    size: int
    hashes: list[bytes]



@dataclass(frozen=True)
class WitnessKey:
    """A witness's raw Ed25519 cosigning key and its mesh identity's endorsement of it (empty if none)."""

    public_key: bytes
    certificate_chain: str = ""
    endorsement: bytes = b""

class TransparencyLog:
    def __init__(self, db: Database, chain: str, origin: str, key: Ed25519PrivateKey) -> None:
        self.db = db
        self.chain = chain
        self.origin = origin
        self._key = key
        self.tree = MerkleTree(db, chain)

    def migrate(self, cur: Cursor, chain_size: int) -> None:
        self.tree.migrate(cur)
        cur.execute("CREATE TABLE IF NOT EXISTS audit_tree_checkpoints (chain TEXT NOT NULL, size BIGINT NOT NULL, "
                    "note TEXT NOT NULL, PRIMARY KEY (chain, size))")
        cur.execute("CREATE TABLE IF NOT EXISTS audit_cosignatures (chain TEXT NOT NULL, size BIGINT NOT NULL, "
                    "witness TEXT NOT NULL, line TEXT NOT NULL, PRIMARY KEY (chain, size, witness))")
        # every key a witness ever cosigned with (old and new across a rotation), with its endorsement
        cur.execute("CREATE TABLE IF NOT EXISTS audit_witness_key_versions (chain TEXT NOT NULL, "
                    f"service TEXT NOT NULL, public_key {self.db.blob} NOT NULL, certificate_chain TEXT NOT NULL, "
                    f"endorsement {self.db.blob} NOT NULL, PRIMARY KEY (chain, service, public_key))")
        # receipts find a caller's latest entry without a scan
        cur.execute("CREATE INDEX IF NOT EXISTS audit_entries_by_principal "
                    "ON audit_entries (chain, principal, sequence)")
        size = self.tree.size(cur)
        while size < chain_size:  # a database written before the tree existed: add the missing leaves
            cur.execute("SELECT entry_hash FROM audit_entries WHERE chain = ? AND sequence > ? ORDER BY sequence "
                        "LIMIT ?", (self.chain, size, BACKFILL_CHUNK))
            leaves = [merkle.leaf_hash(bytes(row[0])) for row in cur.fetchall()]
            self.tree.append(cur, size, leaves)
            size += len(leaves)

    def append(self, cur: Cursor, size: int, entry_hashes: Sequence[bytes]) -> None:
        self.tree.append(cur, size, [merkle.leaf_hash(h) for h in entry_hashes])

    def sign(self, cur: Cursor, size: int) -> str:
        """Signs and stores the checkpoint of the first `size` leaves; returns its note."""
        head = notes.TreeHead(self.origin, size, self.tree.root(cur, size))
        text = head.text()
        note = notes.Note(text, (notes.sign(text, self.origin, self._key),)).render()
        cur.execute("INSERT INTO audit_tree_checkpoints (chain, size, note) VALUES (?, ?, ?) "
                    "ON CONFLICT (chain, size) DO NOTHING", (self.chain, size, note))
        return note

    def _with_cosignatures(self, cur: Cursor, size: int, note: str) -> str:
        cur.execute("SELECT line FROM audit_cosignatures WHERE chain = ? AND size = ? ORDER BY witness",
                    (self.chain, size))
        return note + "".join(row[0] for row in cur.fetchall())

    def checkpoint(self, size: int) -> str | None:
        """The stored checkpoint of `size` with every cosignature gathered for it, or None."""
        with self.db.transaction() as cur:
            cur.execute("SELECT note FROM audit_tree_checkpoints WHERE chain = ? AND size = ?", (self.chain, size))
            row = cur.fetchone()
            return None if row is None else self._with_cosignatures(cur, size, row[0])

    def checkpoints(self, after: int, limit: int) -> list[tuple[int, str]]:
        with self.db.transaction() as cur:
            cur.execute("SELECT size, note FROM audit_tree_checkpoints WHERE chain = ? AND size > ? ORDER BY size "
                        "LIMIT ?", (self.chain, after, limit))
            rows = [(int(size), note) for size, note in cur.fetchall()]
            return [(size, self._with_cosignatures(cur, size, note)) for size, note in rows]

    def latest_checkpoint_size(self) -> int | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT MAX(size) FROM audit_tree_checkpoints WHERE chain = ?", (self.chain,))
            size = cur.fetchone()[0]
            return None if size is None else int(size)

    def latest_entry_of(self, principal: str) -> int | None:
        with self.db.transaction() as cur:
            cur.execute("SELECT MAX(sequence) FROM audit_entries WHERE chain = ? AND principal = ?",
                        (self.chain, principal))
            sequence = cur.fetchone()[0]
            return None if sequence is None else int(sequence)

    def witness_keys(self, note: str, trust_domain: str) -> dict[str, WitnessKey]:
        """service -> the key (and endorsement) of each witness whose cosignature `note` carries, picked by the
        key ID the cosignature line names, so a checkpoint cosigned before a witness's key rotation gets the
        old key and one cosigned after gets the new."""
        ids = {(s.name, s.key_id) for s in notes.parse_note(note).signatures}
        with self.db.transaction() as cur:
            cur.execute("SELECT service, public_key, certificate_chain, endorsement FROM audit_witness_key_versions "
                        "WHERE chain = ?", (self.chain,))
            rows = cur.fetchall()
        found = {}
        for service, raw, chain, endorsement in rows:
            name = notes.witness_name(trust_domain, service)
            kid = notes.key_id(name, notes.COSIGNATURE_V1, Ed25519PublicKey.from_public_bytes(bytes(raw)))
            if (name, kid) in ids:
                found[service] = WitnessKey(bytes(raw), chain, bytes(endorsement))
        return found

    def add_cosignatures(self, size: int, service: str, key: WitnessKey, signatures: Sequence[notes.Signature]) -> None:
        """Stores a witness's cosignatures of checkpoint `size` (already verified by the caller) and its key."""
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO audit_witness_key_versions (chain, service, public_key, certificate_chain, "
                        "endorsement) VALUES (?, ?, ?, ?, ?) ON CONFLICT (chain, service, public_key) DO UPDATE SET "
                        "certificate_chain = excluded.certificate_chain, endorsement = excluded.endorsement",
                        (self.chain, service, key.public_key, key.certificate_chain, key.endorsement))
            for signature in signatures:
                cur.execute("INSERT INTO audit_cosignatures (chain, size, witness, line) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (chain, size, witness) DO NOTHING",
                            (self.chain, size, signature.name, signature.line()))

    def inclusion(self, index: int, size: int) -> Proof:
        """The checkpoint of `size` (which must be stored) and the inclusion proof of leaf `index` in it."""
        with self.db.transaction() as cur:
            cur.execute("SELECT note FROM audit_tree_checkpoints WHERE chain = ? AND size = ?", (self.chain, size))
            row = cur.fetchone()
            if row is None:
                raise LookupError(f"no checkpoint of size {size}")
            return Proof(self._with_cosignatures(cur, size, row[0]), size, self.tree.inclusion_proof(cur, index, size))

    def consistency(self, first: int, second: int) -> list[bytes]:
        with self.db.transaction() as cur:
            return self.tree.consistency_proof(cur, first, second)

    def root(self, size: int) -> bytes:
        with self.db.transaction() as cur:
            return self.tree.root(cur, size)
