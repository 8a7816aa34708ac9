"""
The retention sweep on SQLite, in bounded chunks.

The sweep runs on the one writer thread that every send also needs, so it
never deletes more than L{CHUNK} rows in one job: each chunk is an ordinary
write, queued and committed with whatever sends arrived meanwhile, and the
writer is never held for long however much has to go. What to delete past
a byte quota is decided by a read (on a reader thread), then deleted in
chunks up to that seq.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from kezchat.storage.interfaces import RetentionReport
from kezchat.storage.sqlite.database import SQLiteDatabase

#: rows one write job deletes at most
CHUNK = 500

#: idempotency keys longer than a client may choose are the server's own,
#: derived from a request's signature
CLIENT_KEY_MAX = 64


def _delete_messages(
    conn: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int
) -> list[int]:
    rows = conn.execute(
        "DELETE FROM messages WHERE (recipient, seq) IN"
        f" (SELECT recipient, seq FROM messages WHERE {where} LIMIT ?) RETURNING size",
        (*args, limit),
    ).fetchall()
    return [row[0] for row in rows]


def _delete_keys(conn: sqlite3.Connection, where: str, args: tuple[Any, ...], limit: int) -> int:
    return conn.execute(
        "DELETE FROM idempotency WHERE (sender, key) IN"
        f" (SELECT sender, key FROM idempotency WHERE {where} LIMIT ?)",
        (*args, limit),
    ).rowcount


def _heavy(conn: sqlite3.Connection, max_bytes: int) -> list[tuple[str, int]]:
    """
    Each recipient over C{max_bytes}, with the seq up to which its oldest
    messages add up to the excess.
    """
    found = []
    heavy = conn.execute(
        "SELECT recipient, SUM(size) AS total FROM messages GROUP BY recipient HAVING total > ?",
        (max_bytes,),
    ).fetchall()
    for recipient, total in heavy:
        cutoff = conn.execute(
            "SELECT seq FROM (SELECT seq, SUM(size) OVER (ORDER BY seq) AS running"
            " FROM messages WHERE recipient = ?) WHERE running >= ? LIMIT 1",
            (recipient, total - max_bytes),
        ).fetchone()
        if cutoff is not None:
            found.append((recipient, cutoff[0]))
    return found


async def _chunked(write: Callable[[int], Deferred[Any]], sizes: bool) -> tuple[int, int]:
    """
    Call C{write(CHUNK)} until a chunk comes back short; the rows (and
    bytes, for messages) it deleted in all.
    """
    count = total = 0
    while True:
        done = await write(CHUNK)
        if sizes:
            count += len(done)
            total += sum(done)
            n = len(done)
        else:
            count += done
            n = done
        if n < CHUNK:
            return count, total


async def sweep(
    db: SQLiteDatabase,
    older_than: float,
    max_bytes: int,
    replay_keys_before: float | None = None,
) -> RetentionReport:
    expired, expired_bytes = await _chunked(
        lambda n: db.write(_delete_messages, "created_at < ?", (older_than,), n), True
    )
    await _chunked(lambda n: db.write(_delete_keys, "created_at < ?", (older_than,), n), False)
    if replay_keys_before is not None and replay_keys_before > older_than:
        await _chunked(
            lambda n: db.write(
                _delete_keys, "created_at < ? AND length(key) > ?",
                (replay_keys_before, CLIENT_KEY_MAX), n,
            ),
            False,
        )
    over = over_bytes = 0
    for recipient, cutoff in await db.read(_heavy, max_bytes):

        def upto(n: int, r: str = recipient, c: int = cutoff) -> Deferred[list[int]]:
            return db.write(_delete_messages, "recipient = ? AND seq <= ? ORDER BY seq", (r, c), n)

        count, size = await _chunked(upto, True)
        over += count
        over_bytes += size
    return RetentionReport(expired, expired_bytes, over, over_bytes)


def apply_retention(
    db: SQLiteDatabase, older_than: float, max_bytes: int, replay_keys_before: float | None
) -> Deferred[RetentionReport]:
    return ensureDeferred(sweep(db, older_than, max_bytes, replay_keys_before))
