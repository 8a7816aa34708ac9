"""
The handle registry on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import HandleRecord, HandleTaken, PrimaryTaken
from kezchat.storage.postgres.database import PostgresDatabase
from kezchat.storage.postgres.keylog import append_leaf

#: a handle with its registration's leaf index, if it has one
_SELECT = (
    "SELECT h.local, h.server, h.primary_key, h.registered_at, l.idx AS log_index"
    " FROM handles h LEFT JOIN log_leaves l ON l.fqhn = h.fqhn"
)


def _record(row: Any) -> HandleRecord | None:
    if row is None:
        return None
    index = row["log_index"]
    return HandleRecord(
        row["local"], row["server"], row["primary_key"], row["registered_at"],
        None if index is None else int(index),
    )


class PostgresRegistryStore:
    """
    L{kezchat.storage.RegistryStore} on PostgreSQL: the unique constraints
    decide, so a handle raced on two instances is registered once.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_handle(self, record: HandleRecord, leaf: bytes | None = None) -> Deferred[HandleRecord]:
        async def insert(conn: Any) -> HandleRecord:
            import asyncpg

            try:
                await conn.execute(
                    "INSERT INTO handles (fqhn, local, server, primary_key, registered_at)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    record.fqhn, record.local, record.server, record.primary,
                    record.registered_at,
                )
            except asyncpg.UniqueViolationError as e:
                if e.constraint_name == "handles_primary_key_unique":
                    raise PrimaryTaken(record.primary) from None
                raise HandleTaken(record.fqhn) from None
            if leaf is None:
                return record
            return replace(record, log_index=await append_leaf(conn, record.fqhn, leaf))

        # one transaction: the handle is registered if and only if its leaf
        # is in the log
        return self._db.transaction(insert)

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        async def select(conn: Any) -> HandleRecord | None:
            return _record(
                await conn.fetchrow(f"{_SELECT} WHERE h.fqhn = $1", fqhn)
            )

        return self._db.run(select)

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        async def select(conn: Any) -> HandleRecord | None:
            return _record(
                await conn.fetchrow(
                    f"{_SELECT} WHERE h.primary_key = $1", primary
                )
            )

        return self._db.run(select)
