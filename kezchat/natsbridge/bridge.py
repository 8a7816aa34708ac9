"""
The bridge: one message fabric whichever transport each side uses.

Three flows, each with one owner (SPEC §5, "Bridge"):

 - B{HTTP → NATS.} The relay stores a message and publishes it to the
   broker. L{NatsBroker} delivers it to this process's streams (its
   L{LocalBroker}) and, when NATS is up, also puts it on
   C{kez.inbox.<R>.<S>} for native clients (and for C{KEZ_INBOX}, which
   keeps it for the offline ones), marked with a C{Kez-Stored} header so
   that no chat-server stores it a second time. A native client can set
   any header it likes, so the mark is only believed with a
   C{Kez-Stored-Mac}: an HMAC over the subject, the seq and the payload,
   keyed from the chat-server's own NATS seed, which every instance has
   and no client does (L{StoredMarker}). JetStream keeps nothing that
   says which connection published a message, so the mark has to be in
   the message itself.

 - B{NATS → inbox.} A native client's message is stored once, by
   whichever instance takes it from the shared C{kezchat_bridge}
   consumer (L{kezchat.natsbridge.ingest}).

 - B{Instance → instance.} Whoever stores a message announces it on its
   recipient's C{kezchat.stored.<digest>} subject (no user may read it);
   only the instances holding a stream for that recipient subscribe to it
   (L{kezchat.natsbridge.interest}), and hand the announcement to their
   local streams. So a message POSTed to one chat-server reaches SSE
   streams held by another, at a cost that does not grow with the number
   of instances. A sender's copy is an item of the sender's own inbox, so
   it is announced on the sender's subject: an instance holding a stream
   for the sender delivers it there, one holding none hears nothing. Its
   NATS copy for native clients goes on C{kez.inbox.<S>.out.<R>}.

When NATS is down, only the local delivery happens: HTTP sends and SSE
keep working on the in-process broker, and nothing here ever blocks or
raises into the relay.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat import strictjson
from kezchat.compat.aio import resolve
from kezchat.natsbridge.interest import Interests, announcement_subject
from kezchat.protocol.subjects import inbox_subject, senders_copy_subject
from kezchat.relay.broker import Deliver, LocalBroker, Origin, Subscription
from kezchat.storage.interfaces import StoredMessage

STORED_HEADER = "Kez-Stored"
STORED_MAC_HEADER = "Kez-Stored-Mac"
INSTANCE_HEADER = "Kez-Instance"

#: fqhn -> its primary ("ed25519:<hex>"), as a Deferred, an awaitable or a
#: value; the registry answers it from its cache
PrimaryOf = Callable[[str], "Awaitable[str] | Any"]


class StoredMarker:
    """
    Marks the chat-server's own publications on inbox subjects as already
    stored, unforgeably by clients.

    @param secret: key material only chat-server instances hold (the seed
        of their NATS user); every instance derives the same key.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"kezchat stored-marker v1", hashlib.sha256).digest()

    def _mac(self, subject: str, seq: str, data: bytes) -> str:
        text = b"\n".join([subject.encode(), seq.encode(), hashlib.sha256(data).digest()])
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()

    def headers(self, subject: str, seq: int, data: bytes) -> dict[str, str]:
        return {STORED_HEADER: str(seq), STORED_MAC_HEADER: self._mac(subject, str(seq), data)}

    def is_marked(self, subject: str, headers: dict[str, str] | None, data: bytes) -> bool:
        """
        Whether a message carries a genuine mark (a client's own
        C{Kez-Stored} header is not one).
        """
        headers = headers or {}
        seq, mac = headers.get(STORED_HEADER), headers.get(STORED_MAC_HEADER)
        if seq is None or mac is None:
            return False
        return hmac.compare_digest(self._mac(subject, seq, data), mac)


def encode_stored(message: StoredMessage) -> bytes:
    """
    An announcement of a stored message. The envelope, itself JSON, goes in
    as a JSON value rather than a string: no escaping can double its size
    past the broker's max_payload.
    """
    fields = asdict(message)
    del fields["envelope"]
    head = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return (head[:-1] + ',"envelope":' + message.envelope + "}").encode()


def decode_stored(data: bytes) -> StoredMessage:
    fields = strictjson.loads(data)
    envelope = fields["envelope"]
    if isinstance(envelope, dict):
        envelope = strictjson.member_texts(data.decode("utf-8"))["envelope"]
    elif not isinstance(envelope, str):  # an older instance's announcement
        raise TypeError("envelope")
    return StoredMessage(
        recipient=str(fields["recipient"]),
        seq=int(fields["seq"]),
        sender=str(fields["sender"]),
        sender_primary=str(fields["sender_primary"]),
        envelope=envelope,
        created_at=float(fields["created_at"]),
        # an older instance's announcement has no direction: a received item
        direction="out" if fields.get("direction") == "out" else "in",
        to=_optional_text(fields.get("to")),
        to_primary=_optional_text(fields.get("to_primary")),
        undeliverable=fields.get("undeliverable") is True,
    )


def _optional_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("expected a string")
    return value


class _BridgedSubscription:
    """
    A local subscription that also keeps its recipient's announcements
    coming from NATS while it is open.
    """

    __slots__ = ("_broker", "_local", "_recipient")

    def __init__(self, broker: NatsBroker, recipient: str, local: Subscription) -> None:
        self._broker: NatsBroker | None = broker
        self._recipient = recipient
        self._local = local

    def cancel(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        self._local.cancel()
        if not broker.local.subscriber_count(self._recipient):
            broker.interests.drop(self._recipient)

    def when_ready(self) -> Deferred[None]:
        broker = self._broker
        if broker is None:
            return self._local.when_ready()
        return broker.interests.when_ready(self._recipient)


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

    def __init__(
        self,
        primary_of: PrimaryOf,
        marker: StoredMarker,
        local: LocalBroker | None = None,
        queue_size: int = 10_000,
    ) -> None:
        """
        @param primary_of: how to find a recipient's key (which names their
            NATS subject).
        @param marker: signs what this broker puts on inbox subjects (see
            L{StoredMarker}).
        """
        self.local = local if local is not None else LocalBroker()
        self.marker = marker
        self.instance = uuid.uuid4().hex
        self.nc: Any = None
        self.skipped = 0
        #: announcements from other instances received (only for
        #: recipients with a stream here)
        self.heard = 0
        #: the recipients whose announcements NATS routes here
        self.interests = Interests(self._on_stored)
        self._primary_of = primary_of
        self._queue: asyncio.Queue[tuple[StoredMessage, bool]] | None = None
        self._queue_size = queue_size
        self._sending: asyncio.Task[None] | None = None

    # -- Broker -----------------------------------------------------------

    def subscribe(self, recipient: str, deliver: Deliver) -> Subscription:
        first = not self.local.subscriber_count(recipient)
        local = self.local.subscribe(recipient, deliver)
        if first:
            self.interests.want(recipient)
        return _BridgedSubscription(self, recipient, local)

    def publish(self, message: StoredMessage, *, origin: Origin = Origin.HTTP) -> None:
        """
        Deliver C{message} locally, announce it to the other instances and,
        unless it came from NATS (where it already is), put it on its inbox
        subject. A sender's copy is never on NATS yet, whatever the
        original came in on: it always goes to the sender's subject.
        """
        self.local.publish(message, origin=origin)
        if self._queue is None:
            return
        to_inbox = origin is not Origin.NATS or message.direction == "out"
        if message.undeliverable:
            # the notice that another server never took a message repeats
            # its envelope, which a native client would take for a replay:
            # native clients read the mark from the inbox over HTTP
            to_inbox = False
        try:
            self._queue.put_nowait((message, to_inbox))
        except asyncio.QueueFull:
            self._skip("the outbound queue is full")

    def subscriber_count(self, recipient: str | None = None) -> int:
        return self.local.subscriber_count(recipient)

    # -- NATS side --------------------------------------------------------

    async def start(self, nc: Any) -> None:
        if self.nc is nc and self._sending is not None:
            return  # already running on this connection
        self.nc = nc
        self._queue = asyncio.Queue(self._queue_size)
        self._sending = asyncio.ensure_future(self._send_loop())
        self.interests.attach(nc)

    async def stop(self) -> None:
        self._queue = None
        if self._sending is not None:
            self._sending.cancel()
            await asyncio.gather(self._sending, return_exceptions=True)
            self._sending = None
        await self.interests.detach()

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
        await self.nc.publish(
            announcement_subject(message.recipient),
            encode_stored(message),
            headers={INSTANCE_HEADER: self.instance},
        )
        if to_inbox:
            sender_hex = message.sender_primary.removeprefix("ed25519:")
            if message.direction == "out" and message.to_primary is not None:
                subject = senders_copy_subject(
                    sender_hex, message.to_primary.removeprefix("ed25519:")
                )
            else:
                # the relay knew the key when it stored the message; only a
                # message stored without it costs a lookup
                recipient = message.recipient_primary
                if recipient is None:
                    recipient = cast(str, await resolve(self._primary_of(message.recipient)))
                subject = inbox_subject(recipient.removeprefix("ed25519:"), sender_hex)
            data = message.envelope.encode("utf-8")
            headers = self.marker.headers(subject, message.seq, data)
            headers[INSTANCE_HEADER] = self.instance
            await self.nc.publish(subject, data, headers=headers)

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if self.skipped == 1 or self.skipped % 1000 == 0:
            self.log.warn(
                "Not forwarding to NATS: {reason} ({count} skipped so far)",
                reason=reason,
                count=self.skipped,
            )

    async def _on_stored(self, msg: Any) -> None:
        headers = msg.headers or {}
        if headers.get(INSTANCE_HEADER) == self.instance:
            return  # delivered locally when it was published
        self.heard += 1
        try:
            message = decode_stored(msg.data)
        except (ValueError, KeyError, TypeError, IndexError):
            self.log.warn("Ignoring a malformed announcement on {subject}", subject=msg.subject)
            return
        self.local.publish(message, origin=Origin.NATS)
