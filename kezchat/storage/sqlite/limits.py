"""
Rate-limit counters on SQLite: one upsert per hit, on the writer thread,
so it shares the group commit of whatever else is being written.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred

from kezchat.storage.limits import Hit
from kezchat.storage.sqlite.database import SQLiteDatabase


def _hit(conn: sqlite3.Connection, hit: Hit) -> int:
    (hits,) = conn.execute(
        "INSERT INTO rate_windows (subject, window_start, hits, expires_at) VALUES (?, ?, 1, ?)"
        " ON CONFLICT (subject, window_start) DO UPDATE SET hits = hits + 1 RETURNING hits",
        (hit.subject, hit.window_start, hit.expires_at),
    ).fetchone()
    return int(hits)


class SQLiteHitCounter:
    """
    L{kezchat.storage.limits.HitCounter} on SQLite.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def hit(self, hit: Hit) -> Deferred[int]:
        return self._db.write(_hit, hit, size=len(hit.subject))

    def prune(self, now: int) -> Deferred[int]:
        return self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM rate_windows WHERE (subject, window_start) IN"
                " (SELECT subject, window_start FROM rate_windows WHERE expires_at < ? LIMIT 1000)",
                (now,),
            ).rowcount
        )
