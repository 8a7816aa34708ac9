"""
The relay's messages on PostgreSQL.

Storing goes through one server-side function, C{kez_add_messages}
(C{schema/002_messages.sql}): one round trip and one transaction per
batch, with the seq, idempotency and lock-order rules written once, next
to the tables, where every instance shares them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.python.failure import Failure

from kezchat.storage.errors import DatabaseUnavailable
from kezchat.storage.interfaces import (
    Accepted,
    IdempotencyConflict,
    NewMessage,
    Page,
    RetentionReport,
    StoredMessage,
)
from kezchat.storage.postgres import retention
from kezchat.storage.postgres.database import PostgresDatabase

_ADD = (
    "SELECT ord, seq, created_at, duplicate, request_hash, copy_seq"
    " FROM kez_add_messages($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)


async def _add(conn: Any, messages: list[NewMessage]) -> list[Accepted | IdempotencyConflict]:
    """
    Store a batch; one outcome per message, in order: what it was accepted
    as, or the conflict of a key reused for another request (a conflict
    stores nothing, and does not stop the others).
    """
    rows = await conn.fetch(
        _ADD,
        [m.recipient for m in messages],
        [m.sender for m in messages],
        [m.sender_primary for m in messages],
        [m.envelope for m in messages],
        # the retention cap counts UTF-8 bytes
        [len(m.envelope.encode("utf-8")) for m in messages],
        [m.created_at for m in messages],
        [m.idempotency_key for m in messages],
        [m.request_hash for m in messages],
        # the sender's copy is stored for these (schema/006_senders_copy.sql)
        [m.recipient_primary if m.keeps_senders_copy else None for m in messages],
    )
    outcomes: list[Accepted | IdempotencyConflict] = []
    for new, row in zip(messages, rows, strict=True):
        seq, duplicate = row["seq"], row["duplicate"]
        if not duplicate:
            stored = StoredMessage(
                new.recipient, seq, new.sender, new.sender_primary, new.envelope, new.created_at,
                recipient_primary=new.recipient_primary,
            )
            copy_seq = row["copy_seq"]
            copy = new.senders_copy(copy_seq) if copy_seq is not None else None
            outcomes.append(Accepted(seq, new.created_at, False, stored, copy))
            continue
        first = row["request_hash"]
        if first is not None and new.request_hash is not None and first != new.request_hash:
            outcomes.append(IdempotencyConflict(new.idempotency_key))
        else:
            outcomes.append(Accepted(seq, row["created_at"], True, None))
    return outcomes


async def _add_all(conn: Any, messages: list[NewMessage]) -> list[Accepted]:
    """
    L{_add} for C{add_messages}: a conflict fails the call, as on SQLite.
    """
    outcomes = await _add(conn, messages)
    for outcome in outcomes:
        if isinstance(outcome, IdempotencyConflict):
            raise outcome
    return outcomes  # type: ignore[return-value]


# The page is cut in the database: a running total of sizes marks the rows
# within the byte budget, and only their envelopes leave it (a row past the
# budget is returned without its envelope, to say that more follow). The
# first row always comes, however large, so paging always moves on.
_PAGE = """
SELECT seq, sender, sender_primary, created_at, direction, to_fqhn, to_primary, undeliverable,
       fits,
       CASE WHEN fits THEN envelope END AS envelope
FROM (
    SELECT seq, sender, sender_primary, created_at, direction, to_fqhn, to_primary,
           undeliverable, envelope,
           (ROW_NUMBER() OVER w = 1 OR SUM(size) OVER w <= $4) AS fits
    FROM messages
    WHERE recipient = $1 AND seq > $2
    WINDOW w AS (ORDER BY seq ROWS UNBOUNDED PRECEDING)
    ORDER BY seq
    LIMIT $3 + 1
) AS page
ORDER BY seq
"""


async def read_page(
    conn: Any, recipient: str, since: int, limit: int, max_bytes: int
) -> tuple[list[StoredMessage], bool]:
    """
    The messages after C{since}, at most C{limit} and at most C{max_bytes}
    of envelopes (the first always), and whether more follow.
    """
    messages: list[StoredMessage] = []
    for row in await conn.fetch(_PAGE, recipient, since, limit, max_bytes):
        if len(messages) == limit or not row["fits"]:
            return messages, True
        messages.append(StoredMessage(
            recipient, row["seq"], row["sender"], row["sender_primary"], row["envelope"],
            row["created_at"], row["direction"], row["to_fqhn"], row["to_primary"],
            row["undeliverable"],
        ))
    return messages, False


def _outcome_unknown(failure: Failure) -> bool:
    """
    Whether a failed batch may have been committed anyway (the connection
    broke, the call was cancelled): then it must not be retried, or
    messages without an idempotency key could be stored twice.
    """
    return failure.check(DatabaseUnavailable, CancelledError) is not None


class GroupCommit:
    """
    Single sends that arrive while earlier ones are being stored go
    together in the next call of C{kez_add_messages}: one round trip and
    one commit for all of them, as the SQLite backend's writer thread does.
    A lone send goes at once; under load, batches grow by themselves.

    A batch the database refused (one bad message) is retried one message
    at a time, so only the bad one fails; a batch whose outcome is unknown
    (the connection broke) fails as a whole, never stored twice.
    """

    def __init__(self, db: PostgresDatabase, max_batch: int = 256, max_in_flight: int = 2) -> None:
        self._db = db
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._pending: list[tuple[NewMessage, Deferred[Accepted]]] = []
        #: calls made and messages they carried (batching at work)
        self.calls = 0
        self.batched = 0

    def add(self, message: NewMessage) -> Deferred[Accepted]:
        """
        Queue C{message} for the next batch, if the database's gate admits
        it (a message waiting here counts as pending); else fail at once
        with C{busy}.
        """
        try:
            cost = self._db.gate.admit(len(message.envelope))
        except DatabaseUnavailable as e:
            return fail(e)
        d: Deferred[Accepted] = Deferred()
        self._pending.append((message, d))
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
            self.calls += 1
            self.batched += len(batch)
            stored = self._db.run(_add, [message for message, _d in batch], admitted=True)
            stored.addBoth(self._done, batch)

    def _done(
        self,
        result: list[Accepted | IdempotencyConflict] | Failure,
        batch: list[tuple[NewMessage, Deferred[Accepted]]],
    ) -> None:
        self._in_flight -= 1
        if not isinstance(result, Failure):
            for (_message, d), outcome in zip(batch, result, strict=True):
                if isinstance(outcome, IdempotencyConflict):
                    d.errback(Failure(outcome))
                else:
                    d.callback(outcome)
        elif len(batch) == 1 or _outcome_unknown(result):
            for _message, d in batch:
                d.errback(result)
        else:
            for message, d in batch:
                retried = self._db.run(_add_all, [message], admitted=True)
                retried.addCallback(lambda r: r[0]).chainDeferred(d)
        self._flush()


class PostgresMessageStore:
    """
    L{kezchat.storage.interfaces.MessageStore} on PostgreSQL, correct with
    any number of chat-servers sharing the database: seqs come from a row
    lock on the recipient's counter, idempotency keys from a primary key,
    and retention sweeps from a try-lock, so none of it depends on which
    process does the work.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self.group = GroupCommit(db)

    def add_message(self, message: NewMessage) -> Deferred[Accepted]:
        return self.group.add(message)

    def add_messages(self, messages: list[NewMessage]) -> Deferred[list[Accepted]]:
        return self._db.run(
            _add_all, list(messages), size=sum(len(m.envelope) for m in messages)
        )

    def messages_page(
        self, recipient: str, since: int, limit: int, max_bytes: int
    ) -> Deferred[Page]:
        async def select(conn: Any) -> Page:
            return Page(*await read_page(conn, recipient, since, limit, max_bytes))

        return self._db.run(select)

    def last_seqs(self, recipients: list[str]) -> Deferred[dict[str, int]]:
        async def select(conn: Any) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT recipient, last_seq FROM inbox_counters WHERE recipient = ANY($1)",
                list(recipients),
            )
            return {row[0]: row[1] for row in rows}

        return self._db.run(select)

    def delete_upto(self, recipient: str, upto: int) -> Deferred[int]:
        async def delete(conn: Any) -> int:
            status = await conn.execute(
                "DELETE FROM messages WHERE recipient = $1 AND seq <= $2", recipient, upto
            )
            return int(status.split()[-1])

        return self._db.run(delete)

    def apply_retention(
        self,
        older_than: float,
        max_bytes_per_recipient: int,
        replay_keys_before: float | None = None,
    ) -> Deferred[RetentionReport]:
        return retention.apply_retention(
            self._db, older_than, max_bytes_per_recipient, replay_keys_before
        )
