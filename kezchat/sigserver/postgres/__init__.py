"""
Sigchain events on PostgreSQL, for several kezsig instances sharing one
database. The schema (C{schema/}) is versioned apart from kezchat's, so
both may live in one database.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kezchat.sigchain.errors import FORK, ChainError
from kezchat.sigserver.store import EventRow, Judge
from kezchat.storage.postgres.database import PostgresDatabase

SCHEMA_PACKAGE = "kezchat.sigserver.postgres"


class PostgresSigchainStore:
    """
    The sigchain store on PostgreSQL. An append holds a transaction-level
    advisory lock on its primary while C{judge} reads the stored chain and
    the event is inserted, so appends to one chain are judged one after
    the other whichever instance receives them; the primary key on
    (primary, seq) stays the last line.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def events(self, primary: str) -> Deferred[list[str]]:
        async def select(conn: Any) -> list[str]:
            rows = await conn.fetch(
                "SELECT event FROM events WHERE primary_key = $1 ORDER BY seq", primary
            )
            return [row[0] for row in rows]

        return self._db.run(select)

    def append(
        self, primary: str, row: EventRow, encoded: str, received_at: float, judge: Judge
    ) -> Deferred[bool]:
        async def write(conn: Any) -> bool:
            import asyncpg

            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", primary)
            stored = [
                EventRow(*r)
                for r in await conn.fetch(
                    "SELECT seq, type, revokes, hash FROM events"
                    " WHERE primary_key = $1 ORDER BY seq",
                    primary,
                )
            ]
            if not judge(stored):
                return False
            try:
                await conn.execute(
                    "INSERT INTO events"
                    " (primary_key, seq, type, revokes, hash, event, received_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    primary, row.seq, row.type, row.revokes, row.hash, encoded, received_at,
                )
            except asyncpg.UniqueViolationError:
                raise ChainError(FORK, f"seq {row.seq} is taken", row.seq) from None
            return True

        return self._db.transaction(write)
