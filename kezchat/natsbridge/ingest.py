"""
NATS → inbox: store what native clients publish, once, for HTTP readers.

Every chat-server instance pulls from one shared durable JetStream
consumer, C{kezchat_bridge}, on C{KEZ_INBOX}; JetStream hands each message
to exactly one of them. A message is acknowledged only after it is
committed to the database, so a crash or an outage between the two means
a redelivery, never a loss; the redelivery is recognised by its
idempotency key (the stream sequence), so it is never stored twice.

The subject names the recipient and — vouched for by the broker's
permissions — the sender, so the payload is stored as the opaque envelope
the HTTP API would have carried. Messages the chat-server put there itself
(a C{Kez-Stored} mark that verifies, see L{StoredMarker}) are already
stored and are only acknowledged.

Native messages are held to the rules of HTTP. Like the HTTP route, the
ingest reads each message into a L{SendRequest} (L{from_published}: the
same strict JSON parser, no NaN, no lone surrogates, no duplicate keys;
the same size cap) and hands it to the relay, whose one acceptance path
(L{Relay.accept_bridged}, sharing L{Relay.send}'s checks) applies the same
per-sender send limit and registered parties. Each message is judged
and stored on its own: a bad one is terminated (C{term}: never
redelivered), logged and counted, and never takes the rest of its batch
down with it; only a failure of the database itself leaves messages
unacknowledged for redelivery.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from kezchat.compat.aio import cancel_until_done, resolve
from kezchat.errors import KezError
from kezchat.natsbridge.bridge import StoredMarker
from kezchat.protocol.subjects import ALL_INBOXES, STREAM, parse_inbox_subject
from kezchat.relay.relay import Relay
from kezchat.relay.sendrequest import SendRequest, from_published
from kezchat.storage.errors import IdempotencyConflict, Rejected
from kezchat.storage.interfaces import Accepted

BRIDGE_CONSUMER = "kezchat_bridge"
#: the metric label of a refusal, by the relay's error code
DROP_LABELS = {
    "payload_too_large": "too_large",
    "bad_request": "bad_json",
    "unknown_recipient": "unregistered",
    "rate_limited": "limited",
}
#: failures that are the message's own fault: storing it again would fail again
#: (every backend translates its driver's refusals into L{Rejected})
MESSAGE_FAULTS = (IdempotencyConflict, Rejected, ValueError, UnicodeError)


class Ingest:
    """
    Pulls native clients' messages from JetStream into the relay.

    @param relay: judges and stores what native clients publish.
    @param marker: recognises the chat-server's own publications.
    """

    log = Logger()

    def __init__(
        self, relay: Relay, marker: StoredMarker, batch: int = 256, retry_wait: float = 1.0
    ) -> None:
        self.relay = relay
        self.marker = marker
        self.batch = batch
        self.retry_wait = retry_wait
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, nc: Any) -> None:
        self._stopping = False
        self._task = asyncio.ensure_future(self._run(nc))

    async def stop(self) -> None:
        # the flag ends the loop even if nats-py swallowed the cancellation
        self._stopping = True
        if self._task is not None:
            task, self._task = self._task, None
            await cancel_until_done(task)

    async def _run(self, nc: Any) -> None:
        """
        Subscribe, then fetch and store forever. Any failure other than an
        idle fetch (the broker went away, the stream was recreated) starts
        over from the subscription after a pause; nats-py reconnects
        underneath.
        """
        complained = False
        while not self._stopping:
            try:
                js = nc.jetstream(timeout=5)
                epoch = await self._stream_epoch(js)
                sub = await js.pull_subscribe(
                    ALL_INBOXES,
                    durable=BRIDGE_CONSUMER,
                    stream=STREAM,
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.NEW,
                        ack_policy=AckPolicy.EXPLICIT,
                        ack_wait=30,
                        max_ack_pending=4 * self.batch,
                    ),
                )
                complained = False
                while not self._stopping:
                    try:
                        messages = await sub.fetch(self.batch, timeout=5)
                    except nats.errors.TimeoutError:
                        continue
                    await self._store(messages, epoch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._stopping:
                    return
                if not complained:
                    complained = True
                    self.log.warn(
                        "NATS ingest paused: {error}; retrying", error=str(e) or type(e).__name__
                    )
                await asyncio.sleep(self.retry_wait)

    async def _stream_epoch(self, js: Any) -> str:
        """
        A short tag of this incarnation of the stream: sequence numbers
        restart when a stream is recreated, idempotency keys must not.
        """
        info = await js.stream_info(STREAM)
        created = str(info.created or "")
        return hashlib.sha256(created.encode()).hexdigest()[:12]

    async def _store(self, messages: list[Any], epoch: str) -> None:
        """
        Read each message into a L{SendRequest}, hand those to the relay;
        acknowledge or terminate each message by its own outcome.
        """
        taken: list[tuple[Any, SendRequest]] = []
        for msg in messages:
            if self.marker.is_marked(msg.subject, msg.headers, msg.data):
                await _quietly(msg.ack())  # our own: already stored
                continue
            keys = parse_inbox_subject(msg.subject)
            if keys is None:
                await self._terminate(msg, "not an inbox subject", "subject")
                continue
            recipient_hex, sender_hex = keys
            try:
                request = from_published(
                    f"ed25519:{recipient_hex}",
                    f"ed25519:{sender_hex}",
                    msg.data,
                    f"nats:{epoch}:{msg.metadata.sequence.stream}",
                )
            except KezError as e:
                await self._refuse(msg, e)
                continue
            taken.append((msg, request))
        if not taken:
            return
        accepting = Deferred.fromCoroutine(self.relay.accept_bridged([r for _, r in taken]))
        outcomes: list[Accepted | Exception] = await resolve(accepting)
        for (msg, _), outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, KezError):
                await self._refuse(msg, outcome)
            elif isinstance(outcome, MESSAGE_FAULTS):
                await self._terminate(msg, f"refused by the store: {outcome!r}"[:200], "store")
            elif isinstance(outcome, Exception):
                # the database's fault: leave it for redelivery
                self.log.warn(
                    "NATS ingest could not store a message ({error}); it will be redelivered",
                    error=str(outcome) or type(outcome).__name__,
                )
                await _quietly(msg.nak(delay=self.retry_wait))
            else:
                await _quietly(msg.ack())

    async def _refuse(self, msg: Any, error: KezError) -> None:
        """
        Terminate C{msg} for the reason C{POST /v1/messages} would refuse
        it with, whether the ingest read it (size, JSON) or the relay
        judged it (limit, parties).
        """
        await self._terminate(msg, error.message, DROP_LABELS.get(error.code, error.code))

    async def _terminate(self, msg: Any, reason: str, label: str) -> None:
        """
        Refuse C{msg} for good: never stored, never redelivered; logged
        (the first and every 1,000th) and counted by reason.
        """
        self.dropped += 1
        self.relay.metrics.nats_ingest_dropped.labels(label).inc()
        if self.dropped == 1 or self.dropped % 1000 == 0:
            self.log.info(
                "Not storing a NATS message on {subject}: {reason} ({count} refused so far)",
                subject=msg.subject,
                reason=reason,
                count=self.dropped,
            )
        await _quietly(msg.term())
        return None


async def _quietly(settle: Any) -> None:
    """
    Acknowledge (or nak, or term) without letting a broker hiccup stop
    the batch: an unacknowledged message is redelivered anyway.
    """
    try:
        await settle
    except asyncio.CancelledError:
        raise
    except Exception:
        pass
