"""
The federation outbox on SQLite (L{kezchat.storage.outbox.OutboxStore}).
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import IdempotencyConflict, StoredMessage
from kezchat.storage.outbox import OutboundMessage, Queued, QueueFull
from kezchat.storage.sqlite.database import SQLiteDatabase
from kezchat.storage.sqlite.messages import _next_seq, _put

COLUMNS = (
    "id, destination, sender, recipient, envelope, created_at, idempotency_key, request_hash"
)


def _message(row: tuple[Any, ...]) -> OutboundMessage:
    return OutboundMessage(
        id=row[0], destination=row[1], sender=row[2], recipient=row[3], envelope=row[4],
        created_at=row[5], idempotency_key=row[6], request_hash=row[7],
    )


class SQLiteOutboxStore:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    def enqueue(self, message: OutboundMessage, limit: int = 0) -> Deferred[Queued]:
        def insert(conn: sqlite3.Connection) -> Queued:
            if message.idempotency_key is not None:
                row = conn.execute(
                    "SELECT id, created_at, request_hash FROM federation_outbox"
                    " WHERE sender = ? AND idempotency_key = ?",
                    (message.sender, message.idempotency_key),
                ).fetchone()
                if row is not None:
                    if row[2] != message.request_hash:
                        raise IdempotencyConflict(message.idempotency_key)
                    return Queued(int(row[0]), float(row[1]), True)
            if limit and conn.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM federation_outbox WHERE destination = ?"
                " LIMIT ?)",
                (message.destination, limit),
            ).fetchone()[0] >= limit:
                raise QueueFull(message.destination)
            cursor = conn.execute(
                "INSERT INTO federation_outbox (destination, sender, recipient, envelope,"
                " created_at, idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (message.destination, message.sender, message.recipient, message.envelope,
                 message.created_at, message.idempotency_key, message.request_hash),
            )
            copy = message.senders_copy(0)
            if copy is not None:
                copy = replace(copy, seq=_next_seq(conn, message.sender))
                _put(conn, copy)
            return Queued(int(cursor.lastrowid or 0), message.created_at, False, copy)

        return self._db.write(insert, size=len(message.envelope))

    def destinations(self) -> Deferred[list[str]]:
        return self._db.read(
            lambda conn: [
                row[0] for row in conn.execute("SELECT DISTINCT destination FROM federation_outbox")
            ]
        )

    def pending(self, destination: str, limit: int) -> Deferred[list[OutboundMessage]]:
        return self._db.read(
            lambda conn: [
                _message(row) for row in conn.execute(
                    f"SELECT {COLUMNS} FROM federation_outbox WHERE destination = ?"
                    " ORDER BY id LIMIT ?",
                    (destination, limit),
                )
            ]
        )

    def remove(self, message_id: int) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM federation_outbox WHERE id = ?", (message_id,))

        return self._db.write(delete)

    def give_up(self, message: OutboundMessage, now: float) -> Deferred[StoredMessage | None]:
        def mark(conn: sqlite3.Connection) -> StoredMessage | None:
            conn.execute("DELETE FROM federation_outbox WHERE id = ?", (message.id,))
            row = conn.execute(
                "SELECT seq, sender_primary, to_primary FROM messages WHERE recipient = ?"
                " AND direction = 'out' AND to_fqhn = ? AND envelope = ? AND undeliverable = 0"
                " ORDER BY seq LIMIT 1",
                (message.sender, message.recipient, message.envelope),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE messages SET undeliverable = 1 WHERE recipient = ? AND seq = ?",
                (message.sender, row[0]),
            )
            notice = StoredMessage(
                message.sender, _next_seq(conn, message.sender), message.sender, row[1],
                message.envelope, now, "out", message.recipient, row[2], undeliverable=True,
            )
            _put(conn, notice)
            return notice

        return self._db.write(mark, size=len(message.envelope))

    def claim(self, destination: str, holder: str, now: float, ttl: float) -> Deferred[bool]:
        def upsert(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT INTO federation_leases (destination, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at"
                " WHERE federation_leases.holder = excluded.holder"
                " OR federation_leases.expires_at < ?",
                (destination, holder, now + ttl, now),
            )
            row = conn.execute(
                "SELECT holder FROM federation_leases WHERE destination = ?", (destination,)
            ).fetchone()
            return row is not None and row[0] == holder

        return self._db.write(upsert)

    def release(self, destination: str, holder: str) -> Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM federation_leases WHERE destination = ? AND holder = ?",
                (destination, holder),
            )

        return self._db.write(delete)
