"""
The key directory on SQLite (see L{kezchat.storage.interfaces.KeyLogStore}).

Appends run on the single writer thread inside the registration's own
transaction (C{BEGIN IMMEDIATE}, which other processes sharing the file
wait on), so the next index is simply one past the last one stored.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet.defer import Deferred

from kezchat.keylog.merkle import Node, from_mapping, leaf_hash, left_siblings, new_nodes
from kezchat.storage.interfaces import LogLeaf
from kezchat.storage.sqlite.database import SQLiteDatabase

#: one stored subtree hash, by its primary key
NODE_SQL = "SELECT hash FROM log_nodes WHERE level = ? AND idx = ?"

#: the settings row holding the log key's seed (hex)
LOG_KEY_SETTING = "log_key"
#: the settings row holding the server's own key's seed (hex): the key it
#: proves itself with to other servers (federation)
SERVER_KEY_SETTING = "server_key"


def append_leaf(conn: sqlite3.Connection, fqhn: str, leaf: bytes) -> int:
    """
    Append C{leaf} (registering C{fqhn}) and the subtrees it completes, in
    the caller's transaction; its index.
    """
    index = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves").fetchone()[0]
    conn.execute("INSERT INTO log_leaves (idx, fqhn, leaf) VALUES (?, ?, ?)", (index, fqhn, leaf))
    siblings = _read_nodes(conn, set(left_siblings(index)))
    completed = new_nodes(index, leaf_hash(leaf), from_mapping(siblings))
    conn.executemany(
        "INSERT INTO log_nodes (level, idx, hash) VALUES (?, ?, ?)",
        [(level, i, h) for (level, i), h in completed],
    )
    return int(index)


def _read_nodes(conn: sqlite3.Connection, wanted: set[Node]) -> dict[Node, bytes]:
    """
    Point lookups on the primary key, one per node, in the caller's
    transaction: SQLite plans a row-value C{IN} list as a full scan.
    """
    found: dict[Node, bytes] = {}
    for level, index in wanted:
        row = conn.execute(NODE_SQL, (level, index)).fetchone()
        if row is not None:
            found[(level, index)] = bytes(row[0])
    return found


def ensure_log_key(conn: sqlite3.Connection) -> None:
    """
    Create the log key and the server key if the database has none yet
    (run when it opens). Both live in the settings, so a backup carries them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in (LOG_KEY_SETTING, SERVER_KEY_SETTING):
            conn.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, os.urandom(32).hex()),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SQLiteKeyLogStore:
    """
    L{kezchat.storage.interfaces.KeyLogStore} on SQLite.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def size(self) -> Deferred[int]:
        return self._db.read(
            lambda conn: int(
                conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM log_leaves").fetchone()[0]
            )
        )

    def nodes(self, wanted: set[Node]) -> Deferred[dict[Node, bytes]]:
        return self._db.read(_read_nodes, set(wanted))

    def leaf_of(self, fqhn: str) -> Deferred[LogLeaf | None]:
        def select(conn: sqlite3.Connection) -> LogLeaf | None:
            row = conn.execute(
                "SELECT idx, fqhn, leaf FROM log_leaves WHERE fqhn = ?", (fqhn,)
            ).fetchone()
            return None if row is None else LogLeaf(row[0], row[1], bytes(row[2]))

        return self._db.read(select)

    def entries(self, start: int, count: int) -> Deferred[list[bytes]]:
        return self._db.read(
            lambda conn: [
                bytes(row[0]) for row in conn.execute(
                    "SELECT leaf FROM log_leaves WHERE idx >= ? ORDER BY idx LIMIT ?",
                    (start, count),
                )
            ]
        )

    def signing_seed(self) -> Deferred[bytes]:
        return self._seed(LOG_KEY_SETTING)

    def server_seed(self) -> Deferred[bytes]:
        return self._seed(SERVER_KEY_SETTING)

    def _seed(self, name: str) -> Deferred[bytes]:
        def select(conn: sqlite3.Connection) -> bytes:
            row = conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise LookupError(f"the database has no {name}")
            return bytes.fromhex(row[0])

        return self._db.read(select)
