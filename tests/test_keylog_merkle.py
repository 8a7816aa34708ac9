"""
The RFC 9162 Merkle code against published vectors and an independent
oracle.

The vectors (tests/data/rfc9162_vectors.json) are transparency-dev/merkle's
test data, copied with their source named in the file: the reference tree
of eight leaves with every node and root hash, and the inclusion and
consistency cases (good and tampered) that project's verifier passes. The
oracle for the properties is RFC 9162's recursive definitions written out
here, independently of the iterative, stored-subtree code under test.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kezchat.keylog import merkle
from kezchat.keylog.merkle import MemoryTree, ProofError

VECTORS = json.loads((Path(__file__).parent / "data" / "rfc9162_vectors.json").read_text())


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


# -- the oracle: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 verbatim ----------------


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
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def _tree(leaves: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree


class PublishedVectors(SynchronousTestCase):
    def setUp(self) -> None:
        self.leaves = [bytes.fromhex(h) for h in VECTORS["leaf_inputs_hex"]]
        self.tree = _tree(self.leaves)

    def test_source_named(self) -> None:
        source = VECTORS["_source"]
        self.assertEqual(source["repository"], "https://github.com/transparency-dev/merkle")
        self.assertIn("Apache", source["license"])

    def test_empty_root(self) -> None:
        self.assertEqual(merkle.EMPTY_ROOT.hex(), VECTORS["root_hashes_hex"][0])
        self.assertEqual(MemoryTree().root().hex(), VECTORS["root_hashes_hex"][0])

    def test_roots_of_every_size(self) -> None:
        for size, want in enumerate(VECTORS["root_hashes_hex"]):
            self.assertEqual(self.tree.root(size).hex(), want, f"size {size}")

    def test_stored_nodes(self) -> None:
        for level, hashes in enumerate(VECTORS["node_hashes_hex"]):
            for index, want in enumerate(hashes):
                self.assertEqual(self.tree.node(level, index).hex(), want, (level, index))

    def test_inclusion_cases(self) -> None:
        """
        Every published inclusion case: the good ones verify, every
        tampered one is refused.
        """
        self.assertGreater(len(VECTORS["inclusion"]), 50)
        for case in VECTORS["inclusion"]:
            proof = [_b64(p) for p in case["proof"] or []]
            args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof,
                    _b64(case["root"]))
            if case["wantErr"]:
                self.assertRaises(ProofError, merkle.verify_inclusion, *args)
            else:
                merkle.verify_inclusion(*args)

    def test_consistency_cases(self) -> None:
        self.assertGreater(len(VECTORS["consistency"]), 50)
        for case in VECTORS["consistency"]:
            proof = [_b64(p) for p in case["proof"] or []]
            args = (case["size1"], case["size2"], proof, _b64(case["root1"]),
                    _b64(case["root2"]))
            if case["wantErr"]:
                self.assertRaises(ProofError, merkle.verify_consistency, *args)
            else:
                merkle.verify_consistency(*args)

    def test_generated_proofs_match_published(self) -> None:
        """
        The proofs built from stored nodes equal the published ones for
        the reference tree, byte for byte.
        """
        roots = VECTORS["root_hashes_hex"]
        leaf_hashes = VECTORS["node_hashes_hex"][0]
        matched = 0
        for case in VECTORS["inclusion"]:
            size, index = case["treeSize"], case["leafIdx"]
            if (case["wantErr"] or size > 8 or _b64(case["root"]).hex() != roots[size]
                    or _b64(case["leafHash"]).hex() != leaf_hashes[index]):
                continue
            self.assertEqual(self.tree.inclusion(index, size),
                             [_b64(p) for p in case["proof"] or []])
            matched += 1
        for case in VECTORS["consistency"]:
            m, n = case["size1"], case["size2"]
            if (case["wantErr"] or not 0 < m <= n <= 8 or _b64(case["root1"]).hex() != roots[m]
                    or _b64(case["root2"]).hex() != roots[n]):
                continue
            self.assertEqual(self.tree.consistency(m, n), [_b64(p) for p in case["proof"] or []])
            matched += 1
        self.assertGreaterEqual(matched, 4)


leaves_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


class Properties(SynchronousTestCase):
    @given(leaves_st)
    @settings(max_examples=60, deadline=None)
    def test_roots_match_the_definition(self, leaves: list[bytes]) -> None:
        tree = _tree(leaves)
        for size in range(len(leaves) + 1):
            self.assertEqual(tree.root(size), mth(leaves[:size]))

    @given(leaves_st, st.data())
    @settings(max_examples=150, deadline=None)
    def test_inclusion(self, leaves: list[bytes], data: st.DataObject) -> None:
        """
        Every inclusion proof is RFC 9162's PATH and verifies; a tampered
        one (a hash flipped, dropped or added, another index or size) is
        refused.
        """
        tree = _tree(leaves)
        size = data.draw(st.integers(1, len(leaves)))
        index = data.draw(st.integers(0, size - 1))
        proof = tree.inclusion(index, size)
        self.assertEqual(proof, path(index, leaves[:size]))
        root, lh = tree.root(size), merkle.leaf_hash(leaves[index])
        merkle.verify_inclusion(index, size, lh, proof, root)

        tamper = data.draw(st.sampled_from(["flip", "drop", "add", "index", "size", "leaf"]))
        bad_index, bad_size, bad_leaf, bad = index, size, lh, list(proof)
        if tamper == "flip":
            assume(bad)
            i = data.draw(st.integers(0, len(bad) - 1))
            bit = data.draw(st.integers(0, 255))
            bad[i] = bytes(b ^ (1 << (bit % 8)) if j == bit // 8 else b
                           for j, b in enumerate(bad[i]))
        elif tamper == "drop":
            assume(bad)
            bad.pop(data.draw(st.integers(0, len(bad) - 1)))
        elif tamper == "add":
            bad.insert(data.draw(st.integers(0, len(bad))), hashlib.sha256(b"x").digest())
        elif tamper == "index":
            bad_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        elif tamper == "size":
            # a size too small to hold the leaf (other sizes may share the
            # path's shape: the signed head is what binds size to root)
            assume(index > 0)
            bad_size = data.draw(st.integers(1, index))
        else:
            other = data.draw(st.binary(max_size=8).filter(lambda b: b != leaves[index]))
            bad_leaf = merkle.leaf_hash(other)
        # a different index may still verify when its proof happens to be
        # the same (two identical leaves in symmetric places): not tampering
        if tamper == "index" and tree.inclusion(bad_index, size) == proof and \
                leaves[bad_index] == leaves[index]:
            return
        with self.assertRaises(ProofError):
            merkle.verify_inclusion(bad_index, bad_size, bad_leaf, bad, root)

    @given(leaves_st, st.data())
    @settings(max_examples=150, deadline=None)
    def test_consistency(self, leaves: list[bytes], data: st.DataObject) -> None:
        """
        Every consistency proof is RFC 9162's PROOF and verifies; a
        tampered proof, or an old root rewritten, is refused.
        """
        tree = _tree(leaves)
        second = data.draw(st.integers(1, len(leaves)))
        first = data.draw(st.integers(1, second))
        proof = tree.consistency(first, second)
        self.assertEqual(proof, subproof(first, leaves[:second], True) if first < second else [])
        r1, r2 = tree.root(first), tree.root(second)
        merkle.verify_consistency(first, second, proof, r1, r2)

        tamper = data.draw(st.sampled_from(["flip", "drop", "add", "rewrite"]))
        bad = list(proof)
        bad_r1 = r1
        if tamper == "flip":
            assume(bad)
            i = data.draw(st.integers(0, len(bad) - 1))
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        elif tamper == "drop":
            assume(bad)
            bad.pop()
        elif tamper == "add":
            bad.append(hashlib.sha256(b"x").digest())
        else:
            # the server rewrites an old leaf: the tree it shows now has
            # another first-part root than the one the client kept
            j = data.draw(st.integers(0, first - 1))
            rewritten = list(leaves)
            rewritten[j] = rewritten[j] + b"!"
            bad_r1 = mth(rewritten[:first])
        with self.assertRaises(ProofError):
            merkle.verify_consistency(first, second, bad, bad_r1, r2)

    def test_perfect_nodes_refuses_unaligned(self) -> None:
        self.assertRaises(ValueError, merkle.perfect_nodes, 1, 3)
        self.assertRaises(ValueError, merkle.perfect_nodes, 3, 3)
        self.assertEqual(merkle.perfect_nodes(4, 7), [(1, 2), (0, 6)])

    def test_nodes_needed_are_logarithmic(self) -> None:
        """
        A proof in a tree of a million leaves reads a few dozen stored
        nodes, never more.
        """
        n = 1_000_003
        for index in (0, 1, n // 2, n - 1):
            self.assertLessEqual(len(merkle.nodes_for(merkle.inclusion_ranges(index, n))), 60)
        for m in (1, 7, n // 3, n - 1):
            self.assertLessEqual(len(merkle.nodes_for(merkle.consistency_ranges(m, n))), 60)
