"""
The relay's messages on SQLite.
"""

from __future__ import annotations

import sqlite3

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import (
    Accepted,
    IdempotencyConflict,
    NewMessage,
    Page,
    RetentionReport,
    StoredMessage,
)
from kezchat.storage.sqlite import retention
from kezchat.storage.sqlite.database import SQLiteDatabase


def _stored(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        row["recipient"], row["seq"], row["sender"], row["sender_primary"],
        row["envelope"], row["created_at"], row["direction"], row["to_fqhn"],
        row["to_primary"], bool(row["undeliverable"]),
    )


def _put(conn: sqlite3.Connection, message: StoredMessage) -> None:
    conn.execute(
        "INSERT INTO messages (recipient, seq, sender, sender_primary, envelope, size,"
        " created_at, direction, to_fqhn, to_primary, undeliverable)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message.recipient, message.seq, message.sender, message.sender_primary,
         message.envelope, len(message.envelope.encode("utf-8", "surrogatepass")),
         message.created_at, message.direction, message.to, message.to_primary,
         int(message.undeliverable)),
    )


def _next_seq(conn: sqlite3.Connection, owner: str) -> int:
    (seq,) = conn.execute(
        "INSERT INTO inbox_counters (recipient, last_seq) VALUES (?, 1)"
        " ON CONFLICT (recipient) DO UPDATE SET last_seq = last_seq + 1"
        " RETURNING last_seq",
        (owner,),
    ).fetchone()
    return int(seq)


def _insert(conn: sqlite3.Connection, new: NewMessage) -> Accepted:
    if new.idempotency_key is not None:
        row = conn.execute(
            "SELECT seq, created_at, request_hash FROM idempotency WHERE sender = ? AND key = ?",
            (new.sender, new.idempotency_key),
        ).fetchone()
        if row is not None:
            first = row["request_hash"]
            if first is not None and new.request_hash is not None and first != new.request_hash:
                raise IdempotencyConflict(new.idempotency_key)
            return Accepted(row["seq"], row["created_at"], True, None)
    seq = _next_seq(conn, new.recipient)
    stored = StoredMessage(
        new.recipient, seq, new.sender, new.sender_primary, new.envelope, new.created_at,
        recipient_primary=new.recipient_primary,
    )
    _put(conn, stored)
    # the sender's copy in the same savepoint: both or neither
    copy = new.senders_copy(_next_seq(conn, new.sender)) if new.keeps_senders_copy else None
    if copy is not None:
        _put(conn, copy)
    if new.idempotency_key is not None:
        conn.execute(
            "INSERT INTO idempotency (sender, key, recipient, seq, created_at, request_hash)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (new.sender, new.idempotency_key, new.recipient, seq, new.created_at,
             new.request_hash),
        )
    return Accepted(seq, new.created_at, False, stored, copy)


class SQLiteMessageStore:
    """
    L{kezchat.storage.interfaces.MessageStore} on SQLite. Every write goes
    through the database's writer thread, so concurrent sends share
    commits (group commit) and each recipient's counter is never raced.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def add_message(self, message: NewMessage) -> Deferred[Accepted]:
        return self._db.write(_insert, message, size=len(message.envelope))

    def add_messages(self, messages: list[NewMessage]) -> Deferred[list[Accepted]]:
        return self._db.write(
            lambda conn: [_insert(conn, m) for m in messages],
            size=sum(len(m.envelope) for m in messages),
        )

    def messages_page(
        self, recipient: str, since: int, limit: int, max_bytes: int
    ) -> Deferred[Page]:
        def select(conn: sqlite3.Connection) -> Page:
            # rows are stepped one at a time: stopping early never loads
            # the rest of the inbox
            rows = conn.execute(
                "SELECT * FROM messages WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?",
                (recipient, since, limit + 1),
            )
            page: list[StoredMessage] = []
            total = 0
            try:
                for row in rows:
                    total += row["size"]
                    if len(page) == limit or (page and total > max_bytes):
                        return Page(page, True)
                    page.append(_stored(row))
            finally:
                rows.close()
            return Page(page, False)

        return self._db.read(select)

    def last_seqs(self, recipients: list[str]) -> Deferred[dict[str, int]]:
        def select(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for start in range(0, len(recipients), 500):
                chunk = recipients[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                found.update(conn.execute(
                    f"SELECT recipient, last_seq FROM inbox_counters WHERE recipient IN ({marks})",
                    chunk,
                ).fetchall())
            return found

        return self._db.read(select)

    def delete_upto(self, recipient: str, upto: int) -> Deferred[int]:
        return self._db.write(
            lambda conn: conn.execute(
                "DELETE FROM messages WHERE recipient = ? AND seq <= ?", (recipient, upto)
            ).rowcount
        )

    def apply_retention(
        self,
        older_than: float,
        max_bytes_per_recipient: int,
        replay_keys_before: float | None = None,
    ) -> Deferred[RetentionReport]:
        return retention.apply_retention(
            self._db, older_than, max_bytes_per_recipient, replay_keys_before
        )
