"""
The handle registry on SQLite.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import HandleRecord, HandleTaken, PrimaryTaken
from kezchat.storage.sqlite.database import SQLiteDatabase
from kezchat.storage.sqlite.keylog import append_leaf

#: a handle with its registration's leaf index, if it has one
_SELECT = (
    "SELECT h.*, l.idx AS log_index FROM handles h"
    " LEFT JOIN log_leaves l ON l.fqhn = h.fqhn"
)


def _record(row: sqlite3.Row | None) -> HandleRecord | None:
    if row is None:
        return None
    return HandleRecord(
        row["local"], row["server"], row["primary_key"], row["registered_at"], row["log_index"]
    )


class SQLiteRegistryStore:
    """
    L{kezchat.storage.RegistryStore} on SQLite; the UNIQUE constraints make
    uniqueness hold across threads and processes.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def add_handle(self, record: HandleRecord, leaf: bytes | None = None) -> Deferred[HandleRecord]:
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
            if leaf is None:
                return record
            return replace(record, log_index=append_leaf(conn, record.fqhn, leaf))

        return self._db.write(insert)

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        return self._db.read(
            lambda conn: _record(
                conn.execute(f"{_SELECT} WHERE h.fqhn = ?", (fqhn,)).fetchone()
            )
        )

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        return self._db.read(
            lambda conn: _record(
                conn.execute(f"{_SELECT} WHERE h.primary_key = ?", (primary,)).fetchone()
            )
        )
