"""
Sigchain events on SQLite.

The store knows rows, not rules: an append hands it a C{judge} that sees
the stored chain's summary inside the same write transaction and decides.
Because every write runs on the database's single writer thread, in its
own transaction, two appends of the same seq are judged one after the
other and exactly one is stored; the table's primary key holds that line
even against another process sharing the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred

from kezchat.sigchain.errors import FORK, ChainError
from kezchat.storage.sqlite.database import SQLiteDatabase

SCHEMA_PACKAGE = "kezchat.sigserver"


@dataclass(frozen=True)
class EventRow:
    """
    What an append needs to know about a stored event.
    """

    seq: int
    type: str
    revokes: int | None
    hash: str


#: decides an append from the stored rows (in seq order): True to store,
#: False when the very same event is already stored; raises to refuse
Judge = Callable[[list[EventRow]], bool]


class SQLiteSigchainStore:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def events(self, primary: str) -> Deferred[list[str]]:
        """
        The stored events of C{primary}'s chain, as JCS text, in order.
        """
        return self._db.read(
            lambda conn: [
                row[0]
                for row in conn.execute(
                    "SELECT event FROM events WHERE primary_key = ? ORDER BY seq", (primary,)
                )
            ]
        )

    def append(
        self, primary: str, row: EventRow, encoded: str, received_at: float, judge: Judge
    ) -> Deferred[bool]:
        """
        Store one event if C{judge} allows it.

        @return: a Deferred firing with C{True} once stored durably, or
            C{False} if C{judge} found it already stored.
        """

        def write(conn: sqlite3.Connection) -> bool:
            stored = [
                EventRow(*r)
                for r in conn.execute(
                    "SELECT seq, type, revokes, hash FROM events"
                    " WHERE primary_key = ? ORDER BY seq",
                    (primary,),
                )
            ]
            if not judge(stored):
                return False
            try:
                conn.execute(
                    "INSERT INTO events"
                    " (primary_key, seq, type, revokes, hash, event, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (primary, row.seq, row.type, row.revokes, row.hash, encoded, received_at),
                )
            except sqlite3.IntegrityError:
                raise ChainError(FORK, f"seq {row.seq} is taken", row.seq) from None
            return True

        return self._db.write(write)
