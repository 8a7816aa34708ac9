"""
The handle registry on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import HandleRecord, HandleTaken, PrimaryTaken
from kezchat.storage.postgres.database import PostgresDatabase

_COLUMNS = "local, server, primary_key, registered_at"


def _record(row: Any) -> HandleRecord | None:
    if row is None:
        return None
    return HandleRecord(row["local"], row["server"], row["primary_key"], row["registered_at"])


class PostgresRegistryStore:
    """
    L{kezchat.storage.RegistryStore} on PostgreSQL: the unique constraints
    decide, so a handle raced on two instances is registered once.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def add_handle(self, record: HandleRecord) -> Deferred[HandleRecord]:
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
            return record

        return self._db.run(insert)

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        async def select(conn: Any) -> HandleRecord | None:
            return _record(
                await conn.fetchrow(f"SELECT {_COLUMNS} FROM handles WHERE fqhn = $1", fqhn)
            )

        return self._db.run(select)

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        async def select(conn: Any) -> HandleRecord | None:
            return _record(
                await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM handles WHERE primary_key = $1", primary
                )
            )

        return self._db.run(select)
