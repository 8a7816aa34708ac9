"""
Which recipients' announcements this instance hears: exactly those it
holds a stream for.

Each stored message is announced on a subject of its own recipient
(L{announcement_subject}). An instance subscribes to that subject when
its first stream for the recipient opens and unsubscribes when the last
one closes, so nats-server routes an announcement only to the instances
that can use it: the CPU a message costs does not grow with the number
of instances (every instance hearing every announcement did).

A stream must not read its backlog before the broker routes the
recipient's announcements here, or a message committed after the read
and announced before the subscription took effect would reach it only at
the next periodic check. L{Interests.when_ready} fires once the server
has confirmed the subscription (a flush: the server handles a
connection's commands in order, so once it answers the PING sent after
the SUB, every later publication reaches us; see
L{kezchat.natsbridge.flush} for why nats-py's own flush is not enough). Subscribing and
unsubscribing for one recipient run in one task at a time, which follows
the latest wish: a stream that opens while the previous last one's
unsubscription is in flight gets a fresh, confirmed subscription.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from kezchat.natsbridge.flush import flush

ANNOUNCEMENT_ROOT = "kezchat.stored"

OnMessage = Callable[[Any], Awaitable[None]]


def announcement_subject(recipient: str) -> str:
    """
    The subject a message for C{recipient} (an fqhn) is announced on.

    A handle may hold characters a subject token may not (dots, wildcards),
    so the token is a digest; two handles sharing one (128 bits: never in
    practice) would only cost a wasted delivery, since the announcement
    names its recipient and local delivery goes by that name.
    """
    return f"{ANNOUNCEMENT_ROOT}.{hashlib.sha256(recipient.encode('utf-8')).hexdigest()[:32]}"


class _Interest:
    __slots__ = ("ready", "recipient", "sub", "task", "waiters", "want")

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        #: a local stream needs this recipient's announcements
        self.want = True
        #: the nats-py subscription, once made
        self.sub: Any = None
        #: the subscription for the current wish has been confirmed (or
        #: its attempt ended: waiting longer would not help)
        self.ready = False
        self.waiters: list[Deferred[None]] = []
        self.task: asyncio.Task[None] | None = None


class Interests:
    """
    The per-recipient announcement subscriptions of one NATS connection.

    @param on_message: the nats-py callback for an announcement.
    @param flush_timeout: how long to wait for the server to confirm a
        subscription before letting the stream go on regardless.
    """

    log = Logger()

    def __init__(self, on_message: OnMessage, flush_timeout: float = 2.0) -> None:
        self._on_message = on_message
        self.flush_timeout = flush_timeout
        self._nc: Any = None
        self._entries: dict[str, _Interest] = {}

    def __len__(self) -> int:
        """
        Recipients subscribed to on NATS now.
        """
        return sum(1 for entry in self._entries.values() if entry.sub is not None)

    def attach(self, nc: Any) -> None:
        """
        Use C{nc} from now on, subscribing for every recipient wanted so far.
        """
        self._nc = nc
        for entry in self._entries.values():
            entry.ready = False
            self._reconcile(entry)

    async def detach(self) -> None:
        """
        Unsubscribe everything and forget the connection.
        """
        nc, self._nc = self._nc, None
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            if entry.task is not None:
                entry.task.cancel()
        await asyncio.gather(*(e.task for e in entries if e.task is not None),
                             return_exceptions=True)
        for entry in entries:
            self._fire(entry)
            if entry.sub is not None and nc is not None and not nc.is_closed:
                sub, entry.sub = entry.sub, None
                try:
                    await sub.unsubscribe()
                except Exception:
                    pass

    def want(self, recipient: str) -> None:
        """
        A first local stream for C{recipient} opened.
        """
        entry = self._entries.get(recipient)
        if entry is None:
            entry = self._entries[recipient] = _Interest(recipient)
        elif entry.want:
            return
        else:
            entry.want = True
            entry.ready = entry.sub is not None and entry.task is None
        self._reconcile(entry)

    def drop(self, recipient: str) -> None:
        """
        The last local stream for C{recipient} closed.
        """
        entry = self._entries.get(recipient)
        if entry is None or not entry.want:
            return
        entry.want = False
        entry.ready = False
        self._reconcile(entry)

    def when_ready(self, recipient: str) -> Deferred[None]:
        """
        Fires once the broker routes C{recipient}'s announcements here (at
        once when no connection is attached: there is nothing to wait for).
        """
        entry = self._entries.get(recipient)
        if entry is None or entry.ready or self._nc is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        entry.waiters.append(d)
        return d

    def _reconcile(self, entry: _Interest) -> None:
        if self._nc is None:
            if not entry.want:
                self._entries.pop(entry.recipient, None)
            return
        if entry.task is None:
            entry.task = asyncio.ensure_future(self._follow(entry))

    async def _follow(self, entry: _Interest) -> None:
        """
        Subscribe or unsubscribe until the subscription matches the wish.
        """
        try:
            while self._nc is not None:
                nc = self._nc
                if entry.want and entry.sub is None:
                    if not await self._subscribe(nc, entry):
                        break
                elif entry.want and not entry.ready:
                    await self._confirm(nc, entry)
                elif not entry.want and entry.sub is not None:
                    sub, entry.sub = entry.sub, None
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass  # a closed connection has no subscriptions
                else:
                    break
        finally:
            entry.task = None
            gone = not entry.want and entry.sub is None
            if gone and self._entries.get(entry.recipient) is entry:
                del self._entries[entry.recipient]
            self._fire(entry)

    async def _subscribe(self, nc: Any, entry: _Interest) -> bool:
        """
        Subscribe and wait for the confirmation; C{False} if the
        connection refused the subscription outright.
        """
        try:
            entry.sub = await nc.subscribe(
                announcement_subject(entry.recipient), cb=self._on_message
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # a closed connection: the next attach() subscribes again
            self.log.warn("Could not subscribe to announcements: {error}",
                          error=str(e) or type(e).__name__)
            entry.ready = True
            return False
        await self._confirm(nc, entry)
        return True

    async def _confirm(self, nc: Any, entry: _Interest) -> None:
        try:
            await flush(nc, self.flush_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # down or slow: nats-py sends the SUB on reconnection, and the
            # streams' periodic check covers what is announced meanwhile
            self.log.debug("Announcement subscription not confirmed: {error}",
                           error=str(e) or type(e).__name__)
        if entry.want:
            entry.ready = True
            self._fire(entry)

    def _fire(self, entry: _Interest) -> None:
        waiters, entry.waiters = entry.waiters, []
        for d in waiters:
            d.callback(None)
