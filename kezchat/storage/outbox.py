"""
The federation outbox as both backends keep it (see
C{schema/*_federation.sql}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred

from kezchat.storage.interfaces import StoredMessage


@dataclass(frozen=True)
class OutboundMessage:
    """
    A message for a handle of another server. C{id} is C{None} until queued.
    """

    destination: str
    sender: str
    recipient: str
    envelope: str
    created_at: float
    idempotency_key: str | None = None
    request_hash: str | None = None
    id: int | None = None
    #: when given, the sender's copy (an C{out} item to C{recipient}, whose
    #: key this is) is added to the sender's inbox in the same transaction
    sender_primary: str | None = None
    recipient_primary: str | None = None

    def senders_copy(self, seq: int) -> StoredMessage | None:
        if self.sender_primary is None or self.recipient_primary is None:
            return None
        return StoredMessage(
            self.sender, seq, self.sender, self.sender_primary, self.envelope,
            self.created_at, "out", self.recipient, self.recipient_primary,
            recipient_primary=self.sender_primary,
        )


@dataclass(frozen=True)
class Queued:
    """
    The outcome of queueing: C{duplicate} when the sender's idempotency key
    was used already (then C{id} and C{created_at} are the first one's).

    @raise: nothing; a reused key with another request is
        L{kezchat.storage.interfaces.IdempotencyConflict}.
    """

    id: int
    created_at: float
    duplicate: bool
    #: the sender's copy stored with it (to announce), if any
    copy: StoredMessage | None = None


class QueueFull(Exception):
    """
    The destination already has as many messages queued as allowed.
    """


class OutboxStore(Protocol):
    def enqueue(self, message: OutboundMessage, limit: int = 0) -> Deferred[Queued]:
        """
        Queue C{message} durably (the Deferred fires after the commit).

        @param limit: fail with L{QueueFull} when C{message.destination}
            already has this many queued (0: no cap).
        """

    def destinations(self) -> Deferred[list[str]]:
        """
        The destinations with queued messages (what to resume at start).
        """

    def pending(self, destination: str, limit: int) -> Deferred[list[OutboundMessage]]:
        """
        The oldest queued messages for C{destination}, in queue order.
        """

    def remove(self, message_id: int) -> Deferred[None]:
        """
        Forget a message: delivered, or refused for good.
        """

    def give_up(self, message: OutboundMessage, now: float) -> Deferred[StoredMessage | None]:
        """
        Forget a message that will never be delivered, and say so to its
        sender, in one transaction: the sender's copy is marked
        undeliverable and a notice (an C{out} item with the same envelope,
        marked, numbered now) is added to the sender's inbox. The notice,
        to announce, or C{None} when the sender's copy is gone already.
        """

    def claim(self, destination: str, holder: str, now: float, ttl: float) -> Deferred[bool]:
        """
        Take or renew the lease to deliver to C{destination} until
        C{now + ttl}; C{False} while another holder's lease runs.
        """

    def release(self, destination: str, holder: str) -> Deferred[None]:
        """
        Give the lease up (the queue is empty or the instance stops).
        """
