"""
The bridge: one message fabric whichever transport each side uses.

Three flows, each with one owner (SPEC §5, "Bridge"):

 - B{HTTP → NATS.} The relay stores a message and publishes it to the
   broker. L{NatsBroker} delivers it to this process's streams (its
   L{LocalBroker}) and, when NATS is up, also puts it on
   C{kez.inbox.<R>.<S>} for native clients (and for C{KEZ_INBOX}, which
   keeps it for the offline ones), marked with a C{Kez-Stored} header so
   that no chat-server stores it a second time.

 - B{NATS → inbox.} A native client's message is stored once, by
   whichever instance takes it from the shared C{kezchat_bridge}
   consumer (L{kezchat.natsbridge.ingest}).

 - B{Instance → instance.} Whoever stores a message announces it on
   C{kezchat.stored} (a subject no user may read); every other instance
   hands the announcement to its local streams. So a message POSTed to
   one chat-server reaches SSE streams held by another.

When NATS is down, only the local delivery happens: HTTP sends and SSE
keep working on the in-process broker, and nothing here ever blocks or
raises into the relay.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from twisted.logger import Logger

from kezchat.natsbridge.aio import resolve
from kezchat.natsbridge.subjects import inbox_subject
from kezchat.relay.broker import Deliver, LocalBroker, Subscription
from kezchat.storage.interfaces import StoredMessage

STORED_SUBJECT = "kezchat.stored"
STORED_HEADER = "Kez-Stored"
INSTANCE_HEADER = "Kez-Instance"

# fqhn -> primary ("ed25519:<hex>"), a Deferred, an awaitable or a value
PrimaryOf = Callable[[str], "Awaitable[str] | Any"]


class _Primaries:
    """
    A bounded cache of fqhn → primary hex. A handle's primary never
    changes once registered, so entries never go stale; the bound only
    caps memory.
    """

    def __init__(self, primary_of: PrimaryOf, size: int = 10_000) -> None:
        self._primary_of = primary_of
        self._size = size
        self._cache: OrderedDict[str, str] = OrderedDict()

    async def hex_of(self, fqhn: str) -> str:
        cached = self._cache.get(fqhn)
        if cached is not None:
            self._cache.move_to_end(fqhn)
            return cached
        primary = await resolve(self._primary_of(fqhn))
        key_hex = primary.removeprefix("ed25519:")
        self._cache[fqhn] = key_hex
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return key_hex


def encode_stored(message: StoredMessage) -> bytes:
    return json.dumps(asdict(message), separators=(",", ":"), ensure_ascii=False).encode()


def decode_stored(data: bytes) -> StoredMessage:
    fields = json.loads(data)
    return StoredMessage(
        recipient=str(fields["recipient"]),
        seq=int(fields["seq"]),
        sender=str(fields["sender"]),
        sender_primary=str(fields["sender_primary"]),
        envelope=str(fields["envelope"]),
        created_at=float(fields["created_at"]),
    )


class NatsBroker:
    """
    The relay's broker when NATS is configured: local fan-out first, then
    NATS. Implements L{kezchat.relay.broker.Broker}.

    Outbound NATS publications go through one queue drained by one task,
    so they leave in the order the relay stored them; the queue is
    bounded, and what does not fit, or finds NATS down, is counted and
    skipped (it is stored, and every client can read it over HTTP).
    """

    log = Logger()

    def __init__(self, local: LocalBroker | None = None, queue_size: int = 10_000) -> None:
        self.local = local if local is not None else LocalBroker()
        self.instance = uuid.uuid4().hex
        self.nc: Any = None
        self.skipped = 0
        self._primaries: _Primaries | None = None
        self._queue: asyncio.Queue[tuple[StoredMessage, bool]] | None = None
        self._queue_size = queue_size
        self._sending: asyncio.Task[None] | None = None
        self._stored_sub: Any = None
        self._from_nats = False

    def bind(self, primary_of: PrimaryOf) -> None:
        """
        Tell the broker how to find a recipient's key (their NATS subject).
        """
        self._primaries = _Primaries(primary_of)

    # -- Broker -----------------------------------------------------------

    def subscribe(self, recipient: str, deliver: Deliver) -> Subscription:
        return self.local.subscribe(recipient, deliver)

    def publish(self, message: StoredMessage) -> None:
        self.local.publish(message)
        if self._queue is None:
            return
        try:
            self._queue.put_nowait((message, not self._from_nats))
        except asyncio.QueueFull:
            self._skip("the outbound queue is full")

    def subscriber_count(self, recipient: str | None = None) -> int:
        return self.local.subscriber_count(recipient)

    def announce_from_nats(self, message: StoredMessage, accept: Callable[[], None]) -> None:
        """
        Run C{accept} (which publishes C{message} to this broker) for a
        message that came in over NATS: it is delivered locally and
        announced to the other instances, but not put back on its inbox
        subject, where it already is.
        """
        self._from_nats = True
        try:
            accept()
        finally:
            self._from_nats = False

    # -- NATS side --------------------------------------------------------

    async def start(self, nc: Any) -> None:
        self.nc = nc
        self._queue = asyncio.Queue(self._queue_size)
        self._sending = asyncio.ensure_future(self._send_loop())
        self._stored_sub = await nc.subscribe(STORED_SUBJECT, cb=self._on_stored)

    async def stop(self) -> None:
        self._queue = None
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)
            self._sending = None
        if self._stored_sub is not None:
            sub, self._stored_sub = self._stored_sub, None
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    async def _send_loop(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            message, to_inbox = await queue.get()
            try:
                await self._send(message, to_inbox)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._skip(str(e) or type(e).__name__)

    async def _send(self, message: StoredMessage, to_inbox: bool) -> None:
        if self.nc is None or not self.nc.is_connected:
            self._skip("NATS is down")
            return
        headers = {INSTANCE_HEADER: self.instance}
        await self.nc.publish(STORED_SUBJECT, encode_stored(message), headers=headers)
        if to_inbox and self._primaries is not None:
            recipient_hex = await self._primaries.hex_of(message.recipient)
            subject = inbox_subject(recipient_hex, message.sender_primary.removeprefix("ed25519:"))
            await self.nc.publish(
                subject,
                message.envelope.encode("utf-8"),
                headers={STORED_HEADER: str(message.seq), INSTANCE_HEADER: self.instance},
            )

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if self.skipped == 1 or self.skipped % 1000 == 0:
            self.log.warn(
                "Not forwarding to NATS: {reason} ({count} skipped so far)",
                reason=reason,
                count=self.skipped,
            )

    async def _on_stored(self, msg: Any) -> None:
        if (msg.headers or {}).get(INSTANCE_HEADER) == self.instance:
            return
        try:
            message = decode_stored(msg.data)
        except (ValueError, KeyError, TypeError):
            self.log.warn("Ignoring a malformed announcement on {subject}", subject=STORED_SUBJECT)
            return
        self.local.publish(message)
