"""
C{kezchat-admin log verify}: the key directory replayed from the database
itself, in one consistent snapshot (SQLite or PostgreSQL).

Beyond what any auditor checks (L{kezchat.keylog.audit}), the database
shows more: the leaf indexes must be dense, every stored subtree hash must
be the one the leaves give (a proof is built from them), every leaf's
handle must be registered with the leaf's key, and the head the server
would sign (its root from the stored subtrees, signed by the stored log
key) must be the root of the leaves.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from kezchat.keylog.audit import Replay
from kezchat.keylog.merkle import from_mapping, nodes_for, tree_root
from kezchat.keylog.wire import sign_head

LEAVES = "SELECT idx, fqhn, leaf FROM log_leaves ORDER BY idx"
NODES = "SELECT level, idx, hash FROM log_nodes"
HANDLES = "SELECT fqhn, primary_key FROM handles"
SETTINGS = "SELECT name, value FROM settings"


class LogAudit:
    """
    Fed the database's rows in order, then asked for the verdict.
    """

    def __init__(self) -> None:
        self.replay = Replay()
        self.stored_nodes = 0
        self.wrong_nodes = 0
        self.without_leaf = 0
        #: the stored subtrees the root is made of, and their hashes (all
        #: leaves are read before any node)
        self._root_nodes: set[tuple[int, int]] | None = None
        self._stored: dict[tuple[int, int], bytes] = {}

    def leaf(self, index: int, fqhn: str, leaf: bytes) -> None:
        if index != self.replay.size:
            self.replay.problem(f"leaf index {index} where {self.replay.size} was expected")
        registration = self.replay.add(leaf)
        if registration is not None and registration.fqhn != fqhn:
            self.replay.problem(f"leaf {index} is filed under {fqhn} but registers "
                                f"{registration.fqhn}")

    def node(self, level: int, index: int, value: bytes) -> None:
        self.stored_nodes += 1
        levels = self.replay.tree.levels
        if level >= len(levels) or index >= len(levels[level]):
            self.replay.problem(f"stored node ({level}, {index}) covers leaves the log lacks")
        elif levels[level][index] != value:
            self.wrong_nodes += 1
            self.replay.problem(f"stored node ({level}, {index}) is not the hash of its leaves")
        if self._root_nodes is None:
            size = self.replay.size
            self._root_nodes = nodes_for([(0, size)]) if size else set()
        if (level, index) in self._root_nodes:
            self._stored[(level, index)] = value

    def handle(self, fqhn: str, primary: str) -> None:
        registered = self.replay.handles.get(fqhn)
        if registered is None:
            self.without_leaf += 1
        elif registered[1] != primary:
            self.replay.problem(f"{fqhn} is bound to {primary}, its leaf registers "
                                f"{registered[1]}")

    def verdict(self, settings: dict[str, str]) -> dict[str, Any]:
        replay = self.replay
        expected = sum(len(level) for level in replay.tree.levels)
        if self.stored_nodes != expected:
            replay.problem(f"{self.stored_nodes} subtree hashes are stored, the leaves make "
                           f"{expected}")
        seed_hex = settings.get("log_key")
        head = None
        if seed_hex is None:
            replay.problem("the database has no log key")
        else:
            try:
                stored_root = tree_root(replay.size, from_mapping(self._stored))
            except KeyError:
                replay.problem("the stored subtrees cannot give the root")
            else:
                head = sign_head(bytes.fromhex(seed_hex), replay.size, stored_root, "-")
                replay.check_head(head)
        server = settings.get("server")
        if server is not None:
            for fqhn in replay.handles:
                if not fqhn.endswith("@" + server):
                    replay.problem(f"{fqhn} is registered on another server than {server}")
        summary = replay.summary()
        summary.update({
            "key": head.key if head is not None else None,
            "stored_nodes": self.stored_nodes,
            "handles_without_leaf": self.without_leaf,
        })
        return summary


def audit_sqlite(path: str) -> dict[str, Any]:
    """
    Verify the key directory of the SQLite database at C{path} (opened
    read-only, one read transaction).
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")
        audit = LogAudit()
        for index, fqhn, leaf in conn.execute(LEAVES):
            audit.leaf(index, fqhn, bytes(leaf))
        for level, index, value in conn.execute(NODES):
            audit.node(level, index, bytes(value))
        for fqhn, primary in conn.execute(HANDLES):
            audit.handle(fqhn, primary)
        settings = dict(conn.execute(SETTINGS).fetchall())
        conn.execute("COMMIT")
    finally:
        conn.close()
    return audit.verdict(settings)


async def audit_postgres(url: str) -> dict[str, Any]:
    """
    Verify the key directory of the PostgreSQL database at C{url}, in one
    repeatable-read snapshot.
    """
    import asyncpg

    from kezchat.storage.dburl import pool_settings

    dsn, _min, _max = pool_settings(url)
    conn = await asyncpg.connect(dsn)
    try:
        audit = LogAudit()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(LEAVES, prefetch=2000):
                audit.leaf(int(row[0]), row[1], bytes(row[2]))
            async for row in conn.cursor(NODES, prefetch=5000):
                audit.node(row[0], int(row[1]), bytes(row[2]))
            async for row in conn.cursor(HANDLES, prefetch=5000):
                audit.handle(row[0], row[1])
            settings = {row[0]: row[1] for row in await conn.fetch(SETTINGS)}
    finally:
        await conn.close()
    return audit.verdict(settings)
