"""
The relay: store and forward opaque end-to-end-encrypted envelopes.

A message is durably stored before it is acknowledged and announced to
the broker only after it is stored, so a client that saw a 201 can always
find the message again, and a stream never shows a message that could
still be lost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat.errors import KezError
from kezchat.identity.handles import Handle
from kezchat.identity.keys import InvalidKey, parse_primary
from kezchat.metrics import Metrics
from kezchat.protocol.auth import Authenticator
from kezchat.registry import Registry
from kezchat.relay.broker import Broker, Origin
from kezchat.relay.limits import Limiter
from kezchat.relay.replay import REPLAY_WINDOW, is_implicit
from kezchat.relay.sendrequest import SendRequest
from kezchat.storage.interfaces import (
    Accepted,
    HandleRecord,
    IdempotencyConflict,
    MessageStore,
    NewMessage,
    StoredMessage,
)
from kezchat.storage.outbox import Queued

#: largest page of C{GET /v1/inbox}
MAX_PAGE = 500
DEFAULT_PAGE = 100
#: bytes of envelopes in one C{GET /v1/inbox} page (past its first message)
INBOX_PAGE_BYTES = 4 * 1024 * 1024
#: cursors are SQLite integers
MAX_CURSOR = 2**63 - 1

if TYPE_CHECKING:
    from kezchat.federation.outbound import Outbound

log = Logger()


def _is_primary(value: object) -> bool:
    try:
        parse_primary(value)
    except InvalidKey:
        return False
    return True


def parse_cursor(value: Any, name: str) -> int:
    """
    A non-negative integer from a query string (C{since}, C{upto},
    C{Last-Event-ID}); anything else is a C{bad_request}.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            value = None
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 19:
        raise KezError("bad_request", f"{name} must be a non-negative integer")
    number = int(value)
    if number > MAX_CURSOR:
        raise KezError("bad_request", f"{name} is too large")
    return number


class Relay:
    """
    Sends, lists and acknowledges messages. Knows nothing of HTTP: the
    routes hand it what they read off the request.
    """

    def __init__(
        self,
        registry: Registry,
        store: MessageStore,
        broker: Broker,
        authenticator: Authenticator,
        send_limiter: Limiter,
        metrics: Metrics,
        clock: Callable[[], float],
        outbound: Outbound | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.broker = broker
        self.authenticator = authenticator
        self.send_limiter = send_limiter
        self.metrics = metrics
        self._clock = clock
        #: queues messages for handles of other servers (federation)
        self.outbound = outbound

    # -- who is asking ----------------------------------------------------

    async def authenticate(
        self,
        handle: str,
        auth: str | bytes | None,
        method: str,
        path: str,
        fields: Sequence[str] = (),
        *,
        unknown: str = "not_found",
        expires: int | None = None,
    ) -> HandleRecord:
        """
        The record of C{handle}, once C{auth} proves the caller holds its
        primary key for exactly this request.

        @param unknown: the error code when the handle is not registered.
        @param expires: a long-lived stream's C{exp} (see L{Authenticator.verify}).
        """
        try:
            record = await self.registry.lookup(handle)
        except KezError as e:
            if e.code in ("not_found", "invalid_handle") and unknown != "not_found":
                raise KezError(unknown, "unknown handle") from None
            raise
        self.authenticator.verify(record.primary, auth, method, path, fields, expires=expires)
        return record

    # -- sending ----------------------------------------------------------

    async def send(self, sender: HandleRecord, request: SendRequest) -> Accepted | Queued:
        """
        Store the message C{sender} (authenticated) sends: to a handle of
        this server, or queued for another server's (federation).
        """
        remote = None if request.to_key else self._remote_handle(request.to)
        if remote is not None:
            await self.send_limiter.check(sender.fqhn)
            if self.outbound is None:
                raise KezError("federation_disabled", "this server does not talk to other servers")
            peer = request.envelope_to
            queued = await self.outbound.send(
                sender, remote, request.envelope, request.idempotency_key,
                recipient_primary=peer if _is_primary(peer) else None,
            )
            if queued.copy is not None:
                self.metrics.messages_stored.inc()
                self.broker.publish(queued.copy, origin=Origin.HTTP)
            return queued
        new = await self._check(sender, request)
        accepted = await self._commit(new, Origin.HTTP)
        key = request.idempotency_key
        if accepted.duplicate and key is not None and is_implicit(key):
            self.metrics.replays_refused.inc()
        return accepted

    def _remote_handle(self, to: str) -> Handle | None:
        """
        C{to} as a handle of another server, or C{None} (a local or an
        invalid one, which L{_store} refuses as before).
        """
        try:
            handle = self.registry.parse_lookup(to)
        except KezError:
            return None
        return None if handle.server == self.registry.policy.server else handle

    async def accept_remote(self, new: NewMessage) -> Accepted:
        """
        Store and announce a message another server delivered (checked by
        L{kezchat.federation.inbound}).
        """
        try:
            accepted = await self.store.add_message(new)
        except IdempotencyConflict:
            raise KezError(
                "idempotency_conflict", "this delivery id was already used for another message"
            ) from None
        self._announce(accepted, Origin.HTTP)
        return accepted

    async def _check(self, sender: HandleRecord, request: SendRequest) -> NewMessage:
        """
        Every check of a message to a handle of this server, whichever
        transport brought it: the sender's send limit, then a registered
        recipient. The message to store.

        @raise KezError: C{rate_limited}, C{unknown_recipient}.
        """
        await self.send_limiter.check(sender.fqhn)
        recipient = await self._recipient(request)
        request_hash = None
        if request.idempotency_key is not None:
            digest = hashlib.sha256(
                recipient.fqhn.encode() + b"\n" + request.envelope.encode()
            )
            request_hash = digest.hexdigest()
        return NewMessage(
            recipient=recipient.fqhn,
            sender=sender.fqhn,
            sender_primary=sender.primary,
            envelope=request.envelope,
            created_at=self._clock(),
            idempotency_key=request.idempotency_key,
            request_hash=request_hash,
            recipient_primary=recipient.primary,
        )

    async def _recipient(self, request: SendRequest) -> HandleRecord:
        if request.to_key:
            found = await self.registry.find_primary(request.to)
            if found is None:
                raise KezError("unknown_recipient", "unregistered recipient")
            return found
        try:
            return await self.registry.lookup(request.to)
        except KezError:
            raise KezError("unknown_recipient", f"{request.to!r} is not registered here") from None

    async def _commit(self, new: NewMessage, origin: Origin) -> Accepted:
        """
        Store C{new} and announce what was stored.
        """
        try:
            accepted = await self.store.add_message(new)
        except IdempotencyConflict:
            raise KezError(
                "idempotency_conflict",
                "this idempotency_key was already used for a different message",
            ) from None
        self._announce(accepted, origin)
        return accepted

    def _announce(self, accepted: Accepted, origin: Origin) -> None:
        """
        Publish what was stored: the recipient's copy, then the sender's
        copy (to the sender's own streams and devices).
        """
        if accepted.message is not None:
            self.metrics.messages_stored.inc()
        for message in accepted.stored():
            self.broker.publish(message, origin=origin)

    async def accept_bridged(
        self, batch: Sequence[SendRequest]
    ) -> list[Accepted | Exception]:
        """
        Store messages native clients published on NATS, under the rules
        of C{POST /v1/messages}: the NATS ingest built each L{SendRequest}
        (L{kezchat.relay.sendrequest.from_published}: the same size cap,
        the same strict JSON), and here the same checks as
        L{send}'s follow: registered sender and recipient, the same
        per-sender send limit. What is stored is announced (but not put
        back on NATS).

        Each message is judged on its own, so one bad message never takes
        its batch down; the ones that pass are stored together (one group
        commit takes them all).

        @param batch: requests whose C{sender_key} the transport vouches
            for (the subject each was published on).
        @return: for each message in order, its L{Accepted} (C{duplicate}
            for a redelivery), the L{KezError} that refused it, or the
            store's exception.
        @raise ValueError: a request names no C{sender_key} (nothing is
            stored).
        """
        senders: list[str] = []
        for request in batch:
            if request.sender_key is None:
                raise ValueError("a bridged request must name its sender's key")
            senders.append(request.sender_key)
        outcomes: list[Accepted | Exception | None] = []
        passed: list[tuple[int, NewMessage]] = []
        # every message is judged before any is written: a check that
        # fails the whole call (the registry unreachable) then leaves
        # nothing stored and unannounced behind it
        for request, sender_key in zip(batch, senders, strict=True):
            try:
                sender = await self.registry.find_primary(sender_key)
                if sender is None:
                    raise KezError("unknown_recipient", "unregistered recipient or sender")
                new = await self._check(sender, request)
            except KezError as e:
                outcomes.append(e)
                continue
            passed.append((len(outcomes), new))
            outcomes.append(None)  # settled below
        # stored together: one group commit takes them all
        pending = [(index, Deferred.fromCoroutine(self._commit(new, Origin.NATS)))
                   for index, new in passed]
        for index, committing in pending:
            try:
                outcomes[index] = await committing
            except Exception as e:
                outcomes[index] = e
        return [outcome for outcome in outcomes if outcome is not None]

    # -- the recipient's side ---------------------------------------------

    async def inbox(
        self, owner: HandleRecord, since: int, limit: int
    ) -> list[StoredMessage]:
        """
        A page of C{owner}'s inbox.

        @param since: the last seq the client has (exclusive).
        @param limit: at most this many messages (1 to L{MAX_PAGE}); the
            page also stops at L{INBOX_PAGE_BYTES} of envelopes.
        @raise KezError: C{bad_request} for a limit out of range.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise KezError("bad_request", f"limit must be 1-{MAX_PAGE}")
        page = await self.store.messages_page(owner.fqhn, since, limit, INBOX_PAGE_BYTES)
        return page.messages

    async def last_seq(self, owner: HandleRecord) -> int:
        """
        The latest seq given out in C{owner}'s inbox (0 for none): seqs
        are consecutive per inbox, so a client restoring its history knows
        how many items at most are still to come (C{last - since}).
        """
        last = await self.store.last_seqs([owner.fqhn])
        return last.get(owner.fqhn, 0)

    async def acknowledge(self, owner: HandleRecord, upto: int) -> int:
        """
        Delete C{owner}'s messages up to and including seq C{upto}: the
        client has them. Returns how many were deleted.
        """
        return await self.store.delete_upto(owner.fqhn, upto)

    async def apply_retention(self, max_age: float, max_bytes: int) -> None:
        """
        Drop what retention says to drop; log and count it.
        """
        now = self._clock()
        report = await self.store.apply_retention(
            now - max_age, max_bytes, replay_keys_before=now - REPLAY_WINDOW
        )
        dropped = self.metrics.retention_dropped
        dropped_bytes = self.metrics.retention_dropped_bytes
        if report.expired:
            dropped.labels("age").inc(report.expired)
            dropped_bytes.labels("age").inc(report.expired_bytes)
        if report.over_quota:
            dropped.labels("quota").inc(report.over_quota)
            dropped_bytes.labels("quota").inc(report.over_quota_bytes)
        if report.expired or report.over_quota:
            log.info(
                "retention dropped {expired} expired and {over} over-quota messages"
                " ({bytes} bytes)",
                expired=report.expired,
                over=report.over_quota,
                bytes=report.expired_bytes + report.over_quota_bytes,
            )
