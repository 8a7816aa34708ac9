"""
RFC 9162 Merkle trees: hashing, proofs from stored subtrees, verification.

Pure functions, shared by the server (which builds proofs from the complete
subtree hashes it stores), the clients and the auditors (which verify
them). Hashing is RFC 9162's (the same as RFC 6962's): a leaf is
C{SHA-256(0x00 || leaf)}, an interior node C{SHA-256(0x01 || left ||
right)}, the empty tree C{SHA-256("")}.

A tree of C{n} leaves splits at C{k}, the largest power of two below C{n};
so every subtree that the tree hash, a proof or a root ever needs covers
leaves C{[start, end)} where C{start} is a multiple of the largest power of
two not above C{end - start}. Such a range is a run of I{perfect} subtrees,
largest first, each a node C{(level, index)} covering leaves C{[index *
2**level, (index + 1) * 2**level)}. Perfect subtrees never change once
their last leaf is appended, which is why a log can store them and answer
any proof with O(log n) of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: a perfect subtree: (level, index), covering [index << level, (index + 1) << level)
Node = tuple[int, int]
#: the hash of a perfect subtree, from wherever it is kept
NodeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """
    A proof does not verify, or its arguments cannot describe one.
    """


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def from_mapping(nodes: Mapping[Node, bytes]) -> NodeSource:
    """
    A L{NodeSource} reading a mapping of nodes fetched in one go.
    """
    return lambda level, index: nodes[(level, index)]


def split_point(n: int) -> int:
    """
    The largest power of two strictly below C{n} (C{n >= 2}).
    """
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[Node]:
    """
    The perfect subtrees that make up leaves C{[start, end)}, left to
    right (largest first).

    @raise ValueError: the range is not one an RFC 9162 tree ever hashes
        (empty, or C{start} not aligned to its largest part).
    """
    size = end - start
    if size <= 0 or start < 0:
        raise ValueError(f"empty or negative range [{start}, {end})")
    nodes: list[Node] = []
    offset = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            if offset % (1 << level):
                raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 9162 tree")
            nodes.append((level, offset >> level))
            offset += 1 << level
    return nodes


def range_root(start: int, end: int, node: NodeSource) -> bytes:
    """
    MTH(D[start:end]) from the perfect subtrees' hashes: the tree of a
    range leans left, so its hash folds them from the right.
    """
    hashes = [node(level, index) for level, index in perfect_nodes(start, end)]
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def tree_root(size: int, node: NodeSource) -> bytes:
    """
    The root of the first C{size} leaves (C{EMPTY_ROOT} for none).
    """
    return EMPTY_ROOT if size == 0 else range_root(0, size, node)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """
    The leaf ranges whose hashes make up RFC 9162's PATH(index, D[0:size]),
    in the proof's order (from the leaf up).

    @raise ValueError: unless C{0 <= index < size}.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """
    The leaf ranges whose hashes make up RFC 9162's PROOF(first,
    D[0:second]), in the proof's order. Empty when C{first == second}.

    @raise ValueError: unless C{0 < first <= second}.
    """
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    ranges: list[tuple[int, int]] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    """
    Every stored node the hashes of C{ranges} need: what to read in one go.
    """
    needed: set[Node] = set()
    for start, end in ranges:
        needed.update(perfect_nodes(start, end))
    return needed


def proof_hashes(ranges: Sequence[tuple[int, int]], node: NodeSource) -> list[bytes]:
    return [range_root(start, end, node) for start, end in ranges]


# -- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------


def _check_hashes(hashes: Iterable[bytes]) -> None:
    for h in hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError("a hash is not 32 bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """
    The root that C{path} proves the leaf hash C{leaf} at C{index} to be
    under, in a tree of C{size}.

    @raise ProofError: the arguments cannot describe such a proof.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    _check_hashes([leaf, *path])
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion path is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """
    Check that the leaf hash C{leaf} is at C{index} in the tree of C{size}
    whose root is C{root}.

    @raise ProofError: it is not (or the proof is malformed).
    """
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError("the inclusion proof does not lead to the root")


def verify_consistency(
    first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """
    Check that the tree of C{second} leaves with root C{second_root} extends
    the tree of C{first} leaves with root C{first_root}.

    @raise ProofError: it does not (or the proof is malformed). A proof
        from the empty tree is meaningless and refused, as RFC 9162 has
        none.
    """
    _check_hashes(path)
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from {first} to {second}")
    if first == second:
        if path:
            raise ProofError("equal sizes need an empty proof")
        if first_root != second_root:
            raise ProofError("two different roots for one size")
        return
    if not path:
        raise ProofError("empty consistency proof")
    hashes = list(path)
    if first & (first - 1) == 0:
        hashes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the second root")


# -- an in-memory tree (auditors, tests, benches) ---------------------------


class MemoryTree:
    """
    A whole tree in memory, kept as the same perfect subtrees a log stores:
    what an auditor replaying every leaf builds.
    """

    def __init__(self) -> None:
        #: levels[l][i] is the hash of node (l, i)
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> int:
        """
        Add a leaf (its bytes, hashed here); its index.
        """
        return self.append_hash(leaf_hash(leaf))

    def append_hash(self, h: bytes) -> int:
        index = self.size
        for parent in new_nodes(index, h, self.node):
            level, i = parent[0]
            while len(self.levels) <= level:
                self.levels.append([])
            if len(self.levels[level]) != i:
                raise ValueError(f"subtree ({level}, {i}) completed out of order")
            self.levels[level].append(parent[1])
        return index

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        return tree_root(self.size if size is None else size, self.node)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return proof_hashes(inclusion_ranges(index, size), self.node)

    def consistency(self, first: int, second: int) -> list[bytes]:
        return proof_hashes(consistency_ranges(first, second), self.node)


def new_nodes(index: int, h: bytes, node: NodeSource) -> list[tuple[Node, bytes]]:
    """
    The perfect subtrees that appending the leaf hash C{h} at C{index}
    completes: the leaf itself, then each parent whose right child it
    closes. C{node} supplies the left siblings (already stored).
    """
    out: list[tuple[Node, bytes]] = [((0, index), h)]
    level, i = 0, index
    while i & 1:
        h = node_hash(node(level, i - 1), h)
        level, i = level + 1, i >> 1
        out.append(((level, i), h))
    return out


def left_siblings(index: int) -> list[Node]:
    """
    The stored nodes L{new_nodes} reads when appending leaf C{index}.
    """
    out: list[Node] = []
    level, i = 0, index
    while i & 1:
        out.append((level, i - 1))
        level, i = level + 1, i >> 1
    return out
