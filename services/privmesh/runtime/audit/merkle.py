"""RFC 6962 / RFC 9162 Merkle tree hashing: which stored nodes make up a root or a proof, and the proof checks.

Written here rather than taken from a library: the maintained implementations (transparency-dev/merkle)
are Go, and the Python ones on PyPI keep the whole tree in memory or use their own proof formats, while
the audit store must compute proofs from a few database rows. The checks follow RFC 9162 §2.1.3.2 and
§2.1.4.2 step by step; the tests hold the results against RFC 6962's recursive definitions and the
Certificate Transparency reference vectors.

A stored node is `(level, index)`: the root of the perfect subtree of 2**level leaves starting at leaf
index * 2**level. Only complete subtrees are stored, so a stored node never changes once written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

Node = tuple[int, int]
Range = tuple[int, int]

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees, left to right, whose right-to-left fold is MTH(D[start:end]).

    Valid for the ranges RFC 6962's recursion produces: `start` is a multiple of a power of two at least
    as large as the range.
    """
    nodes = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its range_nodes hashes (left to right)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def frontier_nodes(size: int) -> list[Node]:
    """The nodes a tree of `size` leaves needs to be extended: range_nodes(0, size)."""
    return range_nodes(0, size)


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtree ranges of PATH(index, D[size]) (RFC 6962 §2.1.1), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    return ranges[::-1]


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The subtree ranges of PROOF(first, D[second]) (RFC 6962 §2.1.2), leaf side first."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first in (0, second):
        return []
    ranges = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        ranges.append((start, end))
    return ranges[::-1]


def ranges_nodes(ranges: Iterable[Range]) -> set[Node]:
    return {node for start, end in ranges for node in range_nodes(start, end)}


def proof_from_nodes(ranges: Sequence[Range], stored: dict[Node, bytes]) -> list[bytes]:
    return [fold([stored[node] for node in range_nodes(start, end)]) for start, end in ranges]


class Frontier:
    """The right edge of a growing tree (one hash per set bit of its size): appends leaves, names the
    complete nodes each append creates, and gives the root. O(log n) memory for any size."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError("a frontier needs one hash per perfect subtree of its size")
        self.size = size
        self._hashes = list(hashes)  # largest subtree first, as frontier_nodes lists them

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Adds a leaf hash; returns the (level, index, hash) of every node this completes, the leaf first."""
        created = [(0, self.size, leaf)]
        level, index, current = 0, self.size, leaf
        while index & 1:
            current = node_hash(self._hashes.pop(), current)
            level, index = level + 1, index >> 1
            created.append((level, index, current))
        self._hashes.append(current)
        self.size += 1
        return created

    def root(self) -> bytes:
        return fold(self._hashes)


def root_of(leaves: Iterable[bytes]) -> bytes:
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree of `size` with `root`?"""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (`second`, `second_root`) an append-only extension of (`first`,
    `first_root`)? Size 0 is consistent with everything (an empty proof), as C2SP tlog-witness uses it."""
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not proof
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0
