"""
The federation outbox on PostgreSQL (L{kezchat.storage.outbox.OutboxStore}).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import IdempotencyConflict, StoredMessage
from kezchat.storage.outbox import OutboundMessage, Queued, QueueFull
from kezchat.storage.postgres.database import PostgresDatabase
from kezchat.storage.sqlite.outbox import COLUMNS


def _message(row: Any) -> OutboundMessage:
    return OutboundMessage(
        id=int(row[0]), destination=row[1], sender=row[2], recipient=row[3], envelope=row[4],
        created_at=float(row[5]), idempotency_key=row[6], request_hash=row[7],
    )


class PostgresOutboxStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def enqueue(self, message: OutboundMessage, limit: int = 0) -> Deferred[Queued]:
        async def insert(conn: Any) -> Queued:
            if limit and await conn.fetchval(
                "SELECT COUNT(*) FROM (SELECT 1 FROM federation_outbox WHERE destination = $1"
                " LIMIT $2) AS queued",
                message.destination, limit,
            ) >= limit:
                raise QueueFull(message.destination)
            row = await conn.fetchrow(
                "INSERT INTO federation_outbox (destination, sender, recipient, envelope,"
                " created_at, idempotency_key, request_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (sender, idempotency_key) WHERE idempotency_key IS NOT NULL"
                " DO NOTHING RETURNING id",
                message.destination, message.sender, message.recipient, message.envelope,
                message.created_at, message.idempotency_key, message.request_hash,
            )
            if row is not None:
                copy = message.senders_copy(0)
                if copy is not None:
                    seq = await conn.fetchval(
                        "INSERT INTO inbox_counters AS c (recipient, last_seq) VALUES ($1, 1)"
                        " ON CONFLICT (recipient) DO UPDATE SET last_seq = c.last_seq + 1"
                        " RETURNING last_seq",
                        message.sender,
                    )
                    copy = replace(copy, seq=int(seq))
                    await conn.execute(
                        "INSERT INTO messages (recipient, seq, sender, sender_primary, envelope,"
                        " size, created_at, direction, to_fqhn, to_primary)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        copy.recipient, copy.seq, copy.sender, copy.sender_primary,
                        copy.envelope, len(copy.envelope.encode("utf-8")), copy.created_at,
                        copy.direction, copy.to, copy.to_primary,
                    )
                return Queued(int(row[0]), message.created_at, False, copy)
            first = await conn.fetchrow(
                "SELECT id, created_at, request_hash FROM federation_outbox"
                " WHERE sender = $1 AND idempotency_key = $2",
                message.sender, message.idempotency_key,
            )
            if first[2] != message.request_hash:
                raise IdempotencyConflict(message.idempotency_key)
            return Queued(int(first[0]), float(first[1]), True)

        return self._db.transaction(insert, size=len(message.envelope))

    def destinations(self) -> Deferred[list[str]]:
        async def select(conn: Any) -> list[str]:
            rows = await conn.fetch("SELECT DISTINCT destination FROM federation_outbox")
            return [row[0] for row in rows]

        return self._db.run(select)

    def pending(self, destination: str, limit: int) -> Deferred[list[OutboundMessage]]:
        async def select(conn: Any) -> list[OutboundMessage]:
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM federation_outbox WHERE destination = $1"
                " ORDER BY id LIMIT $2",
                destination, limit,
            )
            return [_message(row) for row in rows]

        return self._db.run(select)

    def remove(self, message_id: int) -> Deferred[None]:
        async def delete(conn: Any) -> None:
            await conn.execute("DELETE FROM federation_outbox WHERE id = $1", message_id)

        return self._db.run(delete)

    def give_up(self, message: OutboundMessage, now: float) -> Deferred[StoredMessage | None]:
        async def mark(conn: Any) -> StoredMessage | None:
            await conn.execute("DELETE FROM federation_outbox WHERE id = $1", message.id)
            row = await conn.fetchrow(
                "UPDATE messages SET undeliverable = TRUE WHERE (recipient, seq) = ("
                " SELECT recipient, seq FROM messages WHERE recipient = $1"
                " AND direction = 'out' AND to_fqhn = $2 AND envelope = $3"
                " AND NOT undeliverable ORDER BY seq LIMIT 1)"
                " RETURNING sender_primary, to_primary",
                message.sender, message.recipient, message.envelope,
            )
            if row is None:
                return None
            seq = await conn.fetchval(
                "INSERT INTO inbox_counters AS c (recipient, last_seq) VALUES ($1, 1)"
                " ON CONFLICT (recipient) DO UPDATE SET last_seq = c.last_seq + 1"
                " RETURNING last_seq",
                message.sender,
            )
            notice = StoredMessage(
                message.sender, int(seq), message.sender, row[0], message.envelope, now,
                "out", message.recipient, row[1], undeliverable=True,
            )
            await conn.execute(
                "INSERT INTO messages (recipient, seq, sender, sender_primary, envelope,"
                " size, created_at, direction, to_fqhn, to_primary, undeliverable)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'out', $8, $9, TRUE)",
                notice.recipient, notice.seq, notice.sender, notice.sender_primary,
                notice.envelope, len(notice.envelope.encode("utf-8")), notice.created_at,
                notice.to, notice.to_primary,
            )
            return notice

        return self._db.transaction(mark, size=len(message.envelope))

    def claim(self, destination: str, holder: str, now: float, ttl: float) -> Deferred[bool]:
        async def upsert(conn: Any) -> bool:
            got = await conn.fetchval(
                "INSERT INTO federation_leases (destination, holder, expires_at)"
                " VALUES ($1, $2, $3)"
                " ON CONFLICT (destination) DO UPDATE SET holder = excluded.holder,"
                " expires_at = excluded.expires_at"
                " WHERE federation_leases.holder = excluded.holder"
                " OR federation_leases.expires_at < $4"
                " RETURNING holder",
                destination, holder, now + ttl, now,
            )
            return bool(got == holder)

        return self._db.run(upsert)

    def release(self, destination: str, holder: str) -> Deferred[None]:
        async def delete(conn: Any) -> None:
            await conn.execute(
                "DELETE FROM federation_leases WHERE destination = $1 AND holder = $2",
                destination, holder,
            )

        return self._db.run(delete)
