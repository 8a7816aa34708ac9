"""
A small, fixed key directory: the registrations of fixed keys at a fixed
time, signed by a fixed log key, with every head and proof of it. The
interop vectors carry it (so the web app's verifier and this one agree
byte for byte) and docs/protocol.md shows it.
"""

from __future__ import annotations

from typing import Any

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.keylog.merkle import MemoryTree, leaf_hash
from kezchat.keylog.wire import b64url, sign_head
from kezchat.protocol.registration import signed_registration

#: the example log's key (never a real server's)
LOG_SEED = bytes(range(64, 96))


def example_leaves(keys: list[tuple[str, KeyPair]], server: str, ts: str) -> list[bytes]:
    """
    The leaves of registering each C{(handle, key)} in order.
    """
    return [canonical_json(signed_registration(key, handle, server, ts)) for handle, key in keys]


def example_log(
    keys: list[tuple[str, KeyPair]], server: str, ts: str, seed: bytes = LOG_SEED
) -> dict[str, Any]:
    """
    Every leaf, signed head, inclusion and consistency proof of the log
    of C{keys}' registrations, as the server's endpoints would give them.
    """
    leaves = example_leaves(keys, server, ts)
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    n = len(leaves)
    return {
        "log_seed_hex": seed.hex(),
        "leaves": [
            {"handle": handle, "seed_hex": key.seed.hex(), "leaf": b64url(leaf),
             "leaf_hash": leaf_hash(leaf).hex()}
            for (handle, key), leaf in zip(keys, leaves, strict=True)
        ],
        "heads": [sign_head(seed, size, tree.root(size), ts).json() for size in range(n + 1)],
        "inclusion": [
            {"handle": keys[index][0], "index": index, "size": size,
             "path": [h.hex() for h in tree.inclusion(index, size)]}
            for size in range(1, n + 1)
            for index in range(size)
        ],
        "consistency": [
            {"from": first, "to": second,
             "path": [h.hex() for h in tree.consistency(first, second)]}
            for second in range(1, n + 1)
            for first in range(1, second + 1)
        ],
    }


#: the interop vectors' log: seven registrations, so that every shape of
#: tree up to 7 leaves (full, lopsided, odd) has its proofs checked
VECTOR_HANDLES = ["ana", "ben", "cai", "dee", "eli", "fay", "gus"]


def keylog_vectors(ts: str) -> dict[str, Any]:
    keys = [(handle, KeyPair(bytes([0x10 + i] * 32))) for i, handle in enumerate(VECTOR_HANDLES)]
    return {"server": "kez.lat", "ts": ts, **example_log(keys, "kez.lat", ts)}
