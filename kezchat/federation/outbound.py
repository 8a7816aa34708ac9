"""
Delivering messages to other servers.

C{POST /v1/messages} to C{bob@b.example} is queued durably (the answer
waits only for that commit) and delivered by a worker per destination
domain: one message at a time, in queue order, so messages of one sender
to one recipient arrive in the order they were sent. A failed attempt is
retried after an exponentially growing pause capped at L{MAX_BACKOFF}, so
a destination that comes back gets its queue within that time; the queue
survives restarts (workers resume at start). Where several instances
share a PostgreSQL database, a lease in the database lets one of them at
a time deliver to a destination, so the order holds there too. The queue
entry's id is the idempotency key the destination stores the message
under, so a delivery repeated after a lost answer or a crash is stored
there once.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from kezchat.errors import KezError
from kezchat.federation import s2s
from kezchat.federation.identity import ServerIdentity
from kezchat.federation.metrics import FederationMetrics
from kezchat.federation.remote import RemoteServers
from kezchat.identity.handles import Handle
from kezchat.storage.interfaces import HandleRecord, IdempotencyConflict, StoredMessage
from kezchat.storage.outbox import OutboundMessage, OutboxStore, Queued, QueueFull

log = Logger()

#: the server-to-server delivery endpoint
DELIVERY_PATH = "/v1/federation/messages"
#: seconds before the first retry, and the most between two attempts
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
#: messages read from the queue at a time
BATCH = 50
#: seconds a delivery lease lasts unless renewed (renewed at half), and
#: the wait while another instance holds it: an instance that crashed
#: holding one delays its destination by at most L{LEASE}
LEASE = 30.0
LEASE_WAIT = 1.0
#: answers that refuse a message for good (retrying would be refused again)
PERMANENT = frozenset({400, 403, 404, 409, 413})


def delivery_body(message: OutboundMessage) -> bytes:
    """
    The C{POST /v1/federation/messages} body: the envelope exactly as the
    sender wrote it, with the queue id, sender and recipient.
    """
    return (
        f'{{"id":{message.id},"from":{json.dumps(message.sender)},'
        f'"to":{json.dumps(message.recipient)},"envelope":{message.envelope}}}'
    ).encode()


class Outbound(Service):
    """
    The outbox and its delivery workers (a service: workers run while it
    does, and resume what is queued when it starts).
    """

    def __init__(
        self,
        store: OutboxStore,
        remote: RemoteServers,
        identity: ServerIdentity,
        reactor: Any,
        clock: Callable[[], float],
        retention_seconds: float,
        metrics: FederationMetrics,
        queue_limit: int = 0,
    ) -> None:
        """
        @param retention_seconds: how long a message is retried before it
            is given up (as long as a local message is kept).
        @param queue_limit: the most messages queued for one destination
            (0: no cap); past it new ones are refused with C{rate_limited}.
        """
        self._queue_limit = queue_limit
        self._store = store
        self._remote = remote
        self._identity = identity
        self._reactor = reactor
        self._clock = clock
        self._retention = retention_seconds
        self._metrics = metrics
        self._workers: dict[str, Deferred[None]] = {}
        #: destinations told of new messages while their worker was busy
        self._again: set[str] = set()
        self._resume: Deferred[None] | None = None
        #: this instance's name on delivery leases, and the leases it holds
        self._holder = uuid.uuid4().hex
        self._leases: dict[str, float] = {}
        #: publishes the notice of a message given up to the sender's
        #: streams (set once the broker exists)
        self.announce: Callable[[StoredMessage], None] | None = None

    async def send(
        self,
        sender: HandleRecord,
        to: Handle,
        envelope_text: str,
        key: str | None,
        recipient_primary: str | None = None,
    ) -> Queued:
        """
        Queue a message for C{to} (a handle of another server).

        @param recipient_primary: the recipient's key (the envelope's
            C{to}): with it the sender's copy is stored in the same
            transaction.

        @raise KezError: the federation policy's refusal, or
            C{idempotency_conflict}.
        """
        self._remote.resolver.check(to.server)
        request_hash = None
        if key is not None:
            digest = hashlib.sha256(to.fqhn.encode() + b"\n" + envelope_text.encode())
            request_hash = digest.hexdigest()
        try:
            queued = await self._store.enqueue(
                OutboundMessage(
                    destination=to.server, sender=sender.fqhn, recipient=to.fqhn,
                    envelope=envelope_text, created_at=self._clock(),
                    idempotency_key=key, request_hash=request_hash,
                    sender_primary=sender.primary, recipient_primary=recipient_primary,
                ),
                self._queue_limit,
            )
        except IdempotencyConflict:
            raise KezError(
                "idempotency_conflict",
                "this idempotency_key was already used for a different message",
            ) from None
        except QueueFull:
            raise KezError(
                "rate_limited",
                f"{self._queue_limit} messages are already waiting for {to.server}; try later",
                retry_after=int(MAX_BACKOFF),
            ) from None
        if not queued.duplicate:
            self._metrics.queued.labels(to.server).inc()
        self.kick(to.server)
        return queued

    # -- the workers --------------------------------------------------------

    def kick(self, destination: str) -> None:
        """
        Make sure C{destination}'s queue is being delivered.
        """
        if not self.running:
            return
        self._again.add(destination)
        if destination in self._workers:
            return
        worker = ensureDeferred(self._run(destination))
        self._workers[destination] = worker

        def done(result: Any) -> None:
            self._workers.pop(destination, None)
            if result is not None and hasattr(result, "check") and not result.check(
                CancelledError
            ):
                log.failure("federation worker for {destination} failed", result,
                            destination=destination)

        worker.addBoth(done)

    async def _pause(self, seconds: float) -> None:
        await deferLater(self._reactor, seconds, lambda: None)

    async def _hold(self, destination: str) -> bool:
        """
        Hold (take, or renew when half run) the lease on C{destination}:
        where several instances share the database, one delivers to it.
        """
        now = self._clock()
        if self._leases.get(destination, 0.0) - LEASE / 2 > now:
            return True
        if not await self._store.claim(destination, self._holder, now, LEASE):
            self._leases.pop(destination, None)
            return False
        self._leases[destination] = now + LEASE
        return True

    async def _run(self, destination: str) -> None:
        try:
            await self._deliver_queue(destination)
        finally:
            if self._leases.pop(destination, None) is not None:
                self._store.release(destination, self._holder).addErrback(lambda _: None)

    async def _deliver_queue(self, destination: str) -> None:
        backoff = FIRST_BACKOFF
        while self.running and destination in self._again:
            self._again.discard(destination)
            try:
                if not await self._hold(destination):
                    # another instance delivers to it: look again shortly
                    self._again.add(destination)
                    await self._pause(LEASE_WAIT)
                    continue
                batch = await self._store.pending(destination, BATCH)
            except CancelledError:
                raise
            except Exception as e:  # the database is briefly unavailable
                log.warn("federation queue unreadable: {e}", e=e)
                self._again.add(destination)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if batch:
                self._again.add(destination)  # read on after this batch
            for message in batch:
                while self.running:
                    try:
                        held = await self._hold(destination)
                    except CancelledError:
                        raise
                    except Exception:
                        held = True  # the attempt tells; the lease is renewed next time
                    if not held:
                        self._again.add(destination)
                        break
                    try:
                        done = await self._attempt(message)
                    except CancelledError:
                        raise
                    except Exception:
                        log.failure("federation: delivery attempt failed")
                        done = False
                    if done:
                        backoff = FIRST_BACKOFF
                        break
                    await self._pause(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                else:
                    return
                if destination in self._again and not held:
                    break

    async def _attempt(self, message: OutboundMessage) -> bool:
        """
        One delivery attempt; C{True} when the message is done with
        (delivered, or refused for good or past retention and so given up:
        L{_give_up}) and removed.
        """
        if message.id is None:
            raise ValueError("only a stored outbound message can be delivered")
        outcome = await self._deliver(message)
        destination = message.destination
        if outcome is None:
            self._metrics.failed_attempts.labels(destination).inc()
            if self._clock() - message.created_at < self._retention:
                return False
            outcome = "expired"
        if outcome != "delivered":
            return await self._give_up(message, outcome)
        else:
            self._metrics.delivered.labels(destination).inc()
            self._metrics.latency.labels(destination).observe(
                max(0.0, self._clock() - message.created_at)
            )
        try:
            await self._store.remove(message.id)
        except Exception:
            return False  # delivered again later: the destination stores it once
        return True

    async def _give_up(self, message: OutboundMessage, why: str) -> bool:
        """
        Forget a message that will never be delivered, marking the
        sender's copy undeliverable and announcing the notice to the
        sender's streams and devices.
        """
        try:
            notice = await self._store.give_up(message, self._clock())
        except Exception:
            return False  # given up on the next attempt
        self._metrics.dropped.labels(message.destination).inc()
        log.warn(
            "federation: message {id} from {sender} to {recipient} undeliverable ({why})",
            id=message.id, sender=message.sender, recipient=message.recipient, why=why,
        )
        if notice is not None and self.announce is not None:
            self.announce(notice)
        return True

    async def _deliver(self, message: OutboundMessage) -> str | None:
        """
        C{"delivered"}, a reason it never will be, or C{None} to retry.
        """
        if message.id is None:
            raise ValueError("only a stored outbound message can be delivered")
        body = delivery_body(message)
        key = await self._identity.key()
        header = s2s.sign(
            key, self._identity.domain, message.destination, "POST", DELIVERY_PATH, body,
            int(self._clock()),
        )
        headers = Headers({
            b"content-type": [b"application/json"],
            s2s.HEADER.encode(): [header.encode()],
        })
        try:
            code, answer = await self._remote.request(
                message.destination, "POST", DELIVERY_PATH, body, headers
            )
        except KezError as e:
            log.info("federation: {destination} not reached ({e})",
                     destination=message.destination, e=e.message)
            return None
        if code in (200, 201):
            return "delivered"
        if code in PERMANENT:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            if error.get("code") != "federation_disabled":
                return f"{code} {error.get('code')}: {error.get('message')}"
        return None

    # -- the service --------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._resume = ensureDeferred(self._resume_queues())
        self._resume.addErrback(lambda f: f.trap(CancelledError))

    async def _resume_queues(self) -> None:
        while self.running:
            try:
                destinations = await self._store.destinations()
            except Exception:
                await self._pause(1.0)  # the database is still opening
                continue
            for destination in destinations:
                self.kick(destination)
            return

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        pending = list(self._workers.values())
        if self._resume is not None:
            pending.append(self._resume)
        for d in pending:
            d.cancel()
        return DeferredList(pending, consumeErrors=True)
