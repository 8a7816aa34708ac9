"""
The key directory on PostgreSQL (see
L{kezchat.storage.interfaces.KeyLogStore}).

Every instance appends inside the registration's transaction after taking
one transaction-scoped advisory lock, held until commit: appends from all
instances are serialised, so the next index is one past the last
committed one and the log stays one dense, consistent sequence.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred

from kezchat.keylog.merkle import Node, from_mapping, leaf_hash, left_siblings, new_nodes
from kezchat.storage.interfaces import LogLeaf
from kezchat.storage.postgres.database import PostgresDatabase
from kezchat.storage.sqlite.keylog import LOG_KEY_SETTING, SERVER_KEY_SETTING

#: stored subtree hashes by (level, idx) arrays: one index lookup per wanted
#: node (LATERAL), whatever the planner thinks of the table's size
NODES_SQL = (
    "SELECT q.level, q.idx, n.hash FROM unnest($1::int[], $2::bigint[]) AS q(level, idx)"
    " CROSS JOIN LATERAL (SELECT hash FROM log_nodes"
    " WHERE level = q.level AND idx = q.idx) AS n"
)

#: the advisory lock key serialising appends ("kezklog")
APPEND_LOCK = 0x6B657A6B6C6F67


async def append_leaf(conn: Any, fqhn: str, leaf: bytes) -> int:
    """
    Append C{leaf} (registering C{fqhn}) and the subtrees it completes, in
    the caller's transaction; its index.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK)
    index = await conn.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves")
    await conn.execute(
        "INSERT INTO log_leaves (idx, fqhn, leaf) VALUES ($1, $2, $3)", index, fqhn, leaf
    )
    siblings = await _read_nodes(conn, set(left_siblings(index)))
    completed = new_nodes(index, leaf_hash(leaf), from_mapping(siblings))
    rows = [(level, i, h) for (level, i), h in completed]
    await conn.executemany("INSERT INTO log_nodes (level, idx, hash) VALUES ($1, $2, $3)", rows)
    return int(index)


async def _read_nodes(conn: Any, wanted: set[Node]) -> dict[Node, bytes]:
    if not wanted:
        return {}
    levels = [level for level, _ in wanted]
    indexes = [i for _, i in wanted]
    rows = await conn.fetch(NODES_SQL, levels, indexes)
    return {(row[0], row[1]): bytes(row[2]) for row in rows}


async def ensure_log_key(conn: Any) -> None:
    """
    Create the log key and the server key if the database has none yet:
    the first instance to start wins, the others keep its keys.
    """
    for name in (LOG_KEY_SETTING, SERVER_KEY_SETTING):
        await conn.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            name, os.urandom(32).hex(),
        )


class PostgresKeyLogStore:
    """
    L{kezchat.storage.interfaces.KeyLogStore} on PostgreSQL.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def size(self) -> Deferred[int]:
        async def select(conn: Any) -> int:
            return int(await conn.fetchval("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves"))

        return self._db.run(select)

    def nodes(self, wanted: set[Node]) -> Deferred[dict[Node, bytes]]:
        return self._db.run(_read_nodes, set(wanted))

    def leaf_of(self, fqhn: str) -> Deferred[LogLeaf | None]:
        async def select(conn: Any) -> LogLeaf | None:
            row = await conn.fetchrow(
                "SELECT idx, fqhn, leaf FROM log_leaves WHERE fqhn = $1", fqhn
            )
            return None if row is None else LogLeaf(int(row[0]), row[1], bytes(row[2]))

        return self._db.run(select)

    def entries(self, start: int, count: int) -> Deferred[list[bytes]]:
        async def select(conn: Any) -> list[bytes]:
            rows = await conn.fetch(
                "SELECT leaf FROM log_leaves WHERE idx >= $1 ORDER BY idx LIMIT $2", start, count
            )
            return [bytes(row[0]) for row in rows]

        return self._db.run(select)

    def signing_seed(self) -> Deferred[bytes]:
        return self._seed(LOG_KEY_SETTING)

    def server_seed(self) -> Deferred[bytes]:
        return self._seed(SERVER_KEY_SETTING)

    def _seed(self, name: str) -> Deferred[bytes]:
        async def select(conn: Any) -> bytes:
            value = await conn.fetchval("SELECT value FROM settings WHERE name = $1", name)
            if value is None:
                raise LookupError(f"the database has no {name}")
            return bytes.fromhex(value)

        return self._db.run(select)
