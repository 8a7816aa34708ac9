"""
The handle registry on SQLite.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import HandleRecord, HandleTaken, PrimaryTaken
from kezchat.storage.sqlite.database import SQLiteDatabase


def _record(row: sqlite3.Row | None) -> HandleRecord | None:
    if row is None:
        return None
    return HandleRecord(row["local"], row["server"], row["primary_key"], row["registered_at"])


class SQLiteRegistryStore:
    """
    L{kezchat.storage.RegistryStore} on SQLite; the UNIQUE constraints make
    uniqueness hold across threads and processes.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def add_handle(self, record: HandleRecord) -> Deferred[HandleRecord]:
        def insert(conn: sqlite3.Connection) -> HandleRecord:
            try:
                conn.execute(
                    "INSERT INTO handles (fqhn, local, server, primary_key, registered_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (record.fqhn, record.local, record.server, record.primary,
                     record.registered_at),
                )
            except sqlite3.IntegrityError as e:
                # classified by SQLite's extended result code, not by the
                # wording of its message: the table has exactly one PRIMARY
                # KEY (fqhn) and one UNIQUE column (primary_key)
                code = getattr(e, "sqlite_errorcode", None)
                if code == sqlite3.SQLITE_CONSTRAINT_UNIQUE:
                    raise PrimaryTaken(record.primary) from None
                if code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
                    raise HandleTaken(record.fqhn) from None
                raise
            return record

        return self._db.write(insert)

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        return self._db.read(
            lambda conn: _record(
                conn.execute("SELECT * FROM handles WHERE fqhn = ?", (fqhn,)).fetchone()
            )
        )

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        return self._db.read(
            lambda conn: _record(
                conn.execute("SELECT * FROM handles WHERE primary_key = ?", (primary,)).fetchone()
            )
        )
