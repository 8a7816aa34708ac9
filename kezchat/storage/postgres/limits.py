"""
Rate-limit counters on PostgreSQL: hits that arrive while earlier ones are
being counted go together in the next statement, one upsert per
(subject, window) with the batch's count, so under load one round trip
counts many requests. Every process sharing the database upserts the same
rows; the row lock orders them, so the numbers handed out never repeat.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from kezchat.storage.errors import DatabaseUnavailable
from kezchat.storage.limits import Hit
from kezchat.storage.postgres.database import PostgresDatabase

# One statement, one round trip. Rows are upserted in (subject, window)
# order, so two batches never deadlock. A count is not worth a disk flush:
# set_config(..., true) lasts to the end of the statement's own
# transaction, so its commit does not wait for the WAL (a crash may forget
# the last counts, letting a few more requests through; it never counts
# twice or blocks).
_UPSERT = """
WITH no_flush AS (SELECT set_config('synchronous_commit', 'off', true)),
hits AS (
    SELECT u.s, u.w, COUNT(*)::INTEGER AS n, MAX(u.e) AS e
    FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS u(s, w, e)
    GROUP BY u.s, u.w
)
INSERT INTO rate_windows AS r (subject, window_start, hits, expires_at)
SELECT h.s, h.w, h.n, h.e FROM hits h CROSS JOIN no_flush
ORDER BY h.s, h.w
ON CONFLICT (subject, window_start) DO UPDATE SET hits = r.hits + EXCLUDED.hits
RETURNING r.subject, r.window_start, r.hits
"""


async def _count(conn: Any, hits: list[Hit]) -> list[int]:
    rows = await conn.fetch(
        _UPSERT,
        [h.subject for h in hits],
        [h.window_start for h in hits],
        [h.expires_at for h in hits],
    )
    total = {(row[0], row[1]): row[2] for row in rows}
    batch_count: dict[tuple[str, int], int] = {}
    for h in hits:
        key = (h.subject, h.window_start)
        batch_count[key] = batch_count.get(key, 0) + 1
    # the batch's hits of one subject took the last numbers of its total,
    # in arrival order
    seen: dict[tuple[str, int], int] = {}
    numbers = []
    for h in hits:
        key = (h.subject, h.window_start)
        seen[key] = seen.get(key, 0) + 1
        numbers.append(total[key] - batch_count[key] + seen[key])
    return numbers


class PostgresHitCounter:
    """
    L{kezchat.storage.limits.HitCounter} on PostgreSQL, batching
    concurrent hits: one statement in flight at a time (measured with 32
    concurrent senders: 16 hits a statement and 35 µs of CPU a hit, against
    10 and 45 µs with two in flight).
    """

    def __init__(self, db: PostgresDatabase, max_batch: int = 512, max_in_flight: int = 1) -> None:
        self._db = db
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[tuple[Hit, Deferred[int]]] = []

    def hit(self, hit: Hit) -> Deferred[int]:
        try:
            cost = self._db.gate.admit(len(hit.subject))
        except DatabaseUnavailable as e:
            return fail(e)
        d: Deferred[int] = Deferred()
        self._pending.append((hit, d))
        self._flush()

        def release(result: object) -> object:
            self._db.gate.release(cost)
            return result

        return d.addBoth(release)

    def _flush(self) -> None:
        while self._pending and self._in_flight < self._max_in_flight:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            counted = self._db.run(_count, [h for h, _d in batch], admitted=True)
            counted.addBoth(self._done, batch)

    def _done(self, result: list[int] | Failure, batch: list[tuple[Hit, Deferred[int]]]) -> None:
        self._in_flight -= 1
        for index, (_hit, d) in enumerate(batch):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result[index])
        self._flush()

    def hits(self, subject: str, window_start: int) -> Deferred[int]:
        async def read(conn: Any) -> int:
            count = await conn.fetchval(
                "SELECT hits FROM rate_windows WHERE subject = $1 AND window_start = $2",
                subject,
                window_start,
            )
            return int(count or 0)

        return self._db.run(read)

    def prune(self, now: int) -> Deferred[int]:
        async def delete(conn: Any) -> int:
            status = await conn.execute(
                "DELETE FROM rate_windows WHERE (subject, window_start) IN"
                " (SELECT subject, window_start FROM rate_windows WHERE expires_at < $1"
                "  LIMIT 1000)",
                now,
            )
            return int(status.split()[-1])

        return self._db.run(delete)
