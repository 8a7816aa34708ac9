"""
The retention sweep on PostgreSQL, in bounded chunks.

Each chunk is its own short transaction deleting at most L{CHUNK} rows, so
the sweep never holds locks (or a connection) for long however much has to
go, and sends keep flowing between chunks. Every chunk first takes the
sweep's advisory try-lock: one instance sweeps at a time, another that
finds it taken stops its round (the next round comes soon enough).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from kezchat.storage.interfaces import RetentionReport
from kezchat.storage.postgres.database import PostgresDatabase

#: the advisory lock key a retention sweep holds ("kezretn")
RETENTION_LOCK = 0x6B657A7265746E

#: rows one transaction deletes at most
CHUNK = 500

#: idempotency keys longer than a client may choose are the server's own,
#: derived from a request's signature
CLIENT_KEY_MAX = 64

_EXPIRED = (
    "WITH doomed AS (SELECT recipient, seq FROM messages WHERE created_at < $1"
    "  LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM messages m USING doomed d"
    "  WHERE m.recipient = d.recipient AND m.seq = d.seq RETURNING m.size)"
    " SELECT COUNT(*), COALESCE(SUM(size), 0) FROM gone"
)
_UPTO = (
    "WITH doomed AS (SELECT recipient, seq FROM messages WHERE recipient = $1 AND seq <= $2"
    "  ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM messages m USING doomed d"
    "  WHERE m.recipient = d.recipient AND m.seq = d.seq RETURNING m.size)"
    " SELECT COUNT(*), COALESCE(SUM(size), 0) FROM gone"
)
_KEYS = (
    "WITH doomed AS (SELECT sender, key FROM idempotency WHERE created_at < $1"
    "  AND length(key) > $2 LIMIT $3 FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM idempotency i USING doomed d"
    "  WHERE i.sender = d.sender AND i.key = d.key RETURNING 1)"
    " SELECT COUNT(*), 0 FROM gone"
)
# per recipient over the cap: the seq up to which the oldest messages add
# up to the excess
_HEAVY = (
    "WITH heavy AS ("
    "  SELECT recipient, SUM(size) - $1 AS excess FROM messages"
    "  GROUP BY recipient HAVING SUM(size) > $1),"
    " running AS ("
    "  SELECT m.recipient, m.seq, h.excess,"
    "   SUM(m.size) OVER (PARTITION BY m.recipient ORDER BY m.seq) AS total"
    "  FROM messages m JOIN heavy h USING (recipient))"
    " SELECT recipient, MIN(seq) AS seq FROM running WHERE total >= excess"
    " GROUP BY recipient"
)


async def _chunk(conn: Any, statement: str, *args: Any) -> tuple[int, int] | None:
    """
    One chunk under the sweep's lock; C{None} when another instance holds it.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RETENTION_LOCK):
        return None
    count, size = await conn.fetchrow(statement, *args)
    return int(count), int(size)


async def _chunked(db: PostgresDatabase, statement: str, *args: Any) -> tuple[int, int, bool]:
    """
    Run C{statement} (its last parameter the chunk size) until a chunk comes
    back short; rows and bytes deleted, and whether it ran to the end.
    """
    count = total = 0
    while True:
        done = await db.transaction(_chunk, statement, *args, CHUNK)
        if done is None:
            return count, total, False
        count += done[0]
        total += done[1]
        if done[0] < CHUNK:
            return count, total, True


async def sweep(
    db: PostgresDatabase,
    older_than: float,
    max_bytes: int,
    replay_keys_before: float | None = None,
) -> RetentionReport:
    expired, expired_bytes, whole = await _chunked(db, _EXPIRED, older_than)
    if not whole:
        return RetentionReport(expired, expired_bytes)
    # keys of every kind past retention, then the server's own ones past
    # their replay window
    _, _, whole = await _chunked(db, _KEYS, older_than, 0)
    if whole and replay_keys_before is not None and replay_keys_before > older_than:
        _, _, whole = await _chunked(db, _KEYS, replay_keys_before, CLIENT_KEY_MAX)
    over = over_bytes = 0
    if whole:

        async def heavy(conn: Any) -> list[Any]:
            return list(await conn.fetch(_HEAVY, max_bytes))

        for row in await db.run(heavy):
            count, size, whole = await _chunked(db, _UPTO, row["recipient"], row["seq"])
            over += count
            over_bytes += size
            if not whole:
                break
    return RetentionReport(expired, expired_bytes, over, over_bytes)


def apply_retention(
    db: PostgresDatabase, older_than: float, max_bytes: int, replay_keys_before: float | None
) -> Deferred[RetentionReport]:
    return ensureDeferred(sweep(db, older_than, max_bytes, replay_keys_before))
