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
(C{Kez-Stored} header) are already stored and are only acknowledged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from twisted.logger import Logger

from kezchat.natsbridge.aio import resolve
from kezchat.natsbridge.bridge import STORED_HEADER, NatsBroker
from kezchat.natsbridge.subjects import ALL_INBOXES, STREAM, parse_inbox_subject
from kezchat.storage.interfaces import NewMessage

BRIDGE_CONSUMER = "kezchat_bridge"
#: the relay's cap on a POST body; an envelope on NATS gets no more room
MAX_ENVELOPE = 256 * 1024


class Ingest:
    """
    Pulls native clients' messages from JetStream into the relay.

    @param relay: the L{kezchat.relay.relay.Relay} (its registry, store
        and C{accept_stored}).
    """

    log = Logger()

    def __init__(
        self,
        relay: Any,
        broker: NatsBroker,
        clock: Callable[[], float],
        batch: int = 256,
        retry_wait: float = 1.0,
    ) -> None:
        self.relay = relay
        self.broker = broker
        self.clock = clock
        self.batch = batch
        self.retry_wait = retry_wait
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self, nc: Any) -> None:
        self._task = asyncio.ensure_future(self._run(nc))

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self, nc: Any) -> None:
        """
        Subscribe, then fetch and store forever. Any failure other than an
        idle fetch (the broker went away, the stream was recreated) starts
        over from the subscription after a pause; nats-py reconnects
        underneath.
        """
        complained = False
        while True:
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
                while True:
                    try:
                        messages = await sub.fetch(self.batch, timeout=5)
                    except nats.errors.TimeoutError:
                        continue
                    await self._store(messages, epoch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
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
        batch: list[NewMessage] = []
        for msg in messages:
            new = await self._convert(msg, epoch)
            if new is not None:
                batch.append(new)
        if batch:
            results = await resolve(self.relay.store.add_messages(batch))
            for accepted in results:
                if accepted.message is not None and not accepted.duplicate:
                    stored = accepted.message
                    self.broker.announce_from_nats(
                        stored, lambda stored=stored: self.relay.accept_stored(stored)
                    )
        for msg in messages:
            await msg.ack()

    async def _convert(self, msg: Any, epoch: str) -> NewMessage | None:
        if STORED_HEADER in (msg.headers or {}):
            return None
        keys = parse_inbox_subject(msg.subject)
        if keys is None:
            return self._drop(msg, "not an inbox subject")
        if len(msg.data) > MAX_ENVELOPE:
            return self._drop(msg, "envelope too large")
        try:
            envelope = json.loads(msg.data)
        except (UnicodeDecodeError, ValueError):
            envelope = None
        if not isinstance(envelope, dict):
            return self._drop(msg, "payload is not a JSON object")
        recipient_hex, sender_hex = keys
        find = self.relay.registry.find_primary
        recipient = await resolve(find(f"ed25519:{recipient_hex}"))
        sender = await resolve(find(f"ed25519:{sender_hex}"))
        if recipient is None or sender is None:
            return self._drop(msg, "unregistered recipient or sender")
        return NewMessage(
            recipient=recipient.fqhn,
            sender=sender.fqhn,
            sender_primary=sender.primary,
            envelope=json.dumps(envelope, separators=(",", ":"), ensure_ascii=False),
            created_at=self.clock(),
            idempotency_key=f"nats:{epoch}:{msg.metadata.sequence.stream}",
        )

    def _drop(self, msg: Any, reason: str) -> None:
        self.dropped += 1
        self.log.info(
            "Not storing a NATS message on {subject}: {reason}", subject=msg.subject, reason=reason
        )
        return None
