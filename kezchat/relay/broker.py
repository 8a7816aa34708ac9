"""
The broker: who is listening for which recipient's messages right now.

L{LocalBroker} fans out in the reactor thread — no threads, no polling.
The NATS bridge plugs in behind the same L{Broker} interface so that the
streams never know whether a message came from this process or another.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from kezchat.storage.interfaces import StoredMessage

Deliver = Callable[[StoredMessage], None]


class Origin(enum.Enum):
    """
    Where a stored message came in: it decides where else it must go (a
    message that came over NATS is already on its NATS inbox subject).
    """

    #: sent to this server's HTTP API
    HTTP = "http"
    #: published by a native client on NATS and stored by the bridge
    NATS = "nats"


class Subscription(Protocol):
    def cancel(self) -> None:
        """
        Stop delivering; safe to call more than once.
        """

    def when_ready(self) -> Deferred[None]:
        """
        Fires once every message announced from now on will be delivered
        (for a broker spanning processes: once the other processes'
        announcements are routed here). A stream reads its backlog only
        after it, so nothing stored meanwhile falls between the backlog
        and the live messages. Never fails, and fires within a bounded
        time even when the link is down (the streams' periodic check
        covers what a link that is down cannot deliver).
        """


class Broker(Protocol):
    def subscribe(self, recipient: str, deliver: Deliver) -> Subscription:
        """
        Call C{deliver} with every message stored for C{recipient} (an
        fqhn) from now on, in the order they were stored.
        """

    def publish(self, message: StoredMessage, *, origin: Origin = Origin.HTTP) -> None:
        """
        Announce a message that is already durably stored.

        @param origin: the transport the message came in on.
        """

    def subscriber_count(self, recipient: str | None = None) -> int:
        """
        Open subscriptions for C{recipient}, or for everyone.
        """


class _LocalSubscription:
    __slots__ = ("_broker", "_deliver", "_recipient")

    def __init__(self, broker: LocalBroker, recipient: str, deliver: Deliver) -> None:
        self._broker: LocalBroker | None = broker
        self._recipient = recipient
        self._deliver = deliver

    def cancel(self) -> None:
        if self._broker is not None:
            self._broker._remove(self._recipient, self._deliver)
            self._broker = None

    def when_ready(self) -> Deferred[None]:
        # in-process delivery is synchronous: ready at once
        return succeed(None)


class LocalBroker:
    """
    In-process, per-recipient fan-out.

    Memory is one list entry per subscriber; publishing to a recipient with
    no subscribers is one dict lookup. A subscriber that raises is logged
    by the caller's Deferred machinery, never allowed to starve the others.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Deliver]] = {}

    def subscribe(self, recipient: str, deliver: Deliver) -> Subscription:
        self._subscribers.setdefault(recipient, []).append(deliver)
        return _LocalSubscription(self, recipient, deliver)

    def _remove(self, recipient: str, deliver: Deliver) -> None:
        listeners = self._subscribers.get(recipient)
        if listeners is None:
            return
        try:
            listeners.remove(deliver)
        except ValueError:
            return
        if not listeners:
            del self._subscribers[recipient]

    def publish(self, message: StoredMessage, *, origin: Origin = Origin.HTTP) -> None:
        listeners = self._subscribers.get(message.recipient)
        if not listeners:
            return
        for deliver in tuple(listeners):
            deliver(message)

    def subscriber_count(self, recipient: str | None = None) -> int:
        if recipient is not None:
            return len(self._subscribers.get(recipient, ()))
        return sum(len(v) for v in self._subscribers.values())
