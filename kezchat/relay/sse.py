"""
Server-sent event streams of an inbox (SPEC §3.3).

The guarantees, and how they are kept:

  - I{No gap, no duplicate on resume.} A resuming stream subscribes to the
    broker I{before} it reads the backlog from the database, holding live
    messages aside while it replays. A message is published only after its
    commit, so anything committed before the read is in the backlog and
    anything after is held aside; the overlap is removed by seq.
  - I{No gap live.} A recipient's seqs are consecutive when they are
    stored. A live message whose seq jumps past the next one expected (it
    came from another instance, ahead of one still on its way) sends the
    stream back to the database for the missing range first.
  - I{Bounded memory, in bytes.} The stream is a streaming producer:
    while the transport says pause, events wait in a small queue; a queue
    past its bound, or a pause that lasts too long, disconnects the client.
    It reconnects with C{Last-Event-ID} and loses nothing. The backlog of
    a replay is read a page at a time, each page bounded in bytes by what
    is left of the same budget, and only once the previous page is
    written; live messages held aside meanwhile count against it too, and
    past it are dropped and read back from the database instead (they are
    stored). Everything is released when the stream closes.
  - I{Bounded streams.} A handle and a client IP may each hold only so
    many open streams (429 past that).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from kezchat.errors import KezError
from kezchat.metrics import Metrics
from kezchat.relay.broker import Broker, Subscription
from kezchat.relay.framewriter import frame_writer
from kezchat.relay.items import event_size, sse_event
from kezchat.relay.relay import MAX_PAGE
from kezchat.storage.interfaces import MessageStore, Page, StoredMessage

log = Logger()

PING = b": ping\n\n"
PREAMBLE = b"retry: 3000\n\n"


@implementer(IPushProducer)
class EventStream:
    """
    One open C{text/event-stream} response.
    """

    __slots__ = (
        "_backlog",
        "_backlog_more",
        "_buffered",
        "_catching_up",
        "_dropped_held",
        "_held",
        "_hub",
        "_paused_at",
        "_queue",
        "_reading",
        "_request",
        "_subscription",
        "_write_out",
        "client",
        "done",
        "last_sent",
        "recipient",
    )

    def __init__(
        self,
        hub: StreamHub,
        request: IRequest,
        recipient: str,
        last_sent: int | None,
        client: str = "",
    ) -> None:
        self._hub = hub
        self._request = request
        self.recipient = recipient
        self.client = client
        self.last_sent = last_sent
        self._subscription: Subscription | None = None
        self._catching_up = False
        self._reading = False
        self._backlog: deque[StoredMessage] = deque()
        self._backlog_more = False
        self._held: list[StoredMessage] = []
        self._dropped_held = False
        self._paused_at: float | None = None
        self._queue: list[bytes] = []
        #: bytes this stream holds in memory: backlog page, held live
        #: messages and queued events; bounded by the hub's max_queued_bytes
        self._buffered = 0
        self._write_out = request.write
        self.done: Deferred[bytes] = Deferred(lambda _: self._closed())

    # -- life cycle -------------------------------------------------------

    def start(self) -> None:
        request = self._request
        transport = getattr(request.channel, "transport", None)
        set_keepalive = getattr(transport, "setTcpKeepAlive", None)
        if set_keepalive is not None:
            set_keepalive(True)
        request.registerProducer(self, True)
        request.write(PREAMBLE)
        # events go straight to the socket when nothing is queued
        self._write_out = frame_writer(request)
        self._subscription = self._hub.broker.subscribe(self.recipient, self.deliver)
        request.notifyFinish().addBoth(lambda _: self._closed())
        if self.last_sent is not None:
            self._catch_up()

    def close(self) -> None:
        """
        End the response cleanly (server shutdown).
        """
        if not self.done.called:
            self._release()
            self.done.callback(b"")

    def _closed(self) -> None:
        """
        The client went away, or Klein cancelled the response.
        """
        self._release()

    def _release(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
            self._queue = []
            self._held = []
            self._backlog.clear()
            self._buffered = 0
            self._hub._forget(self)
            try:
                self._request.unregisterProducer()
            except RuntimeError:
                pass

    def disconnect(self) -> None:
        """
        Cut the connection: the client could not keep up.
        """
        self._hub.metrics.slow_consumer_disconnects.inc()
        self._release()
        transport = getattr(self._request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()

    # -- messages ---------------------------------------------------------

    def deliver(self, message: StoredMessage) -> None:
        if self._catching_up:
            self._hold(message)
            return
        if self.last_sent is not None:
            if message.seq <= self.last_sent:
                return
            if message.seq > self.last_sent + 1:
                self._hold(message)
                self._catch_up()
                return
        self._send(message)

    def _hold(self, message: StoredMessage) -> None:
        """
        Keep a live message aside during a replay, within the budget; past
        it, drop what is held: it is stored, and the replay reads it back.
        """
        self._held.append(message)
        self._buffered += event_size(message)
        if self._buffered > self._hub.max_queued_bytes:
            self._buffered -= sum(event_size(m) for m in self._held)
            self._held = []
            self._dropped_held = True

    def _send(self, message: StoredMessage) -> None:
        self.last_sent = message.seq
        self._write(sse_event(message))
        self._hub.metrics.messages_delivered.inc()

    def _write(self, data: bytes) -> None:
        if self._subscription is None:
            return
        if self._paused_at is None:
            self._write_out(data)
            return
        self._queue.append(data)
        self._buffered += len(data)
        if self._buffered > self._hub.max_queued_bytes:
            self.disconnect()

    def _catch_up(self) -> None:
        """
        Replay stored messages after C{last_sent}, a page at a time, only
        as fast as the client reads them (a replay must not look like a
        slow consumer); live messages are held aside meanwhile. A page is
        bounded in bytes by what the stream's budget has left (at least
        one message).
        """
        self._catching_up = True
        self._reading = True
        # messages dropped from the held list before this read are in it
        self._dropped_held = False
        since = self.last_sent or 0
        budget = max(1, self._hub.max_queued_bytes - self._buffered)
        d = self._hub.store.messages_page(self.recipient, since, MAX_PAGE, budget)
        d.addCallbacks(self._fetched, self._catch_up_failed)

    def _fetched(self, page: Page) -> None:
        self._reading = False
        if self._subscription is None:
            return
        self._backlog = deque(page.messages)
        self._backlog_more = page.more
        self._buffered += sum(event_size(m) for m in page.messages)
        self._pump()

    def _pump(self) -> None:
        if self._reading:
            return  # _fetched pumps
        backlog = self._backlog
        while backlog and self._paused_at is None and self._subscription is not None:
            message = backlog.popleft()
            self._buffered -= event_size(message)
            if self.last_sent is None or message.seq > self.last_sent:
                self._send(message)
        if backlog or self._paused_at is not None or self._subscription is None:
            return  # resumeProducing pumps again
        if self._backlog_more or self._dropped_held:
            self._catch_up()
            return
        self._catching_up = False
        held, self._held = sorted(self._held, key=lambda m: m.seq), []
        self._buffered -= sum(event_size(m) for m in held)
        for message in held:
            self.deliver(message)

    def _catch_up_failed(self, failure: object) -> None:
        self._reading = False
        log.failure("reading the backlog of {recipient} failed", failure, recipient=self.recipient)
        # better a reconnect (which resumes) than a silent gap
        self.disconnect()

    # -- IPushProducer ----------------------------------------------------

    def pauseProducing(self) -> None:
        if self._paused_at is None:
            self._paused_at = self._hub.clock()

    def resumeProducing(self) -> None:
        self._paused_at = None
        if self._subscription is None:
            return
        if self._queue:
            data, self._queue = b"".join(self._queue), []
            self._buffered -= len(data)
            self._request.write(data)
        if self._catching_up:
            # the rest of the page, or the next one if the last write of
            # a page is what paused us
            self._pump()

    def stopProducing(self) -> None:
        self._release()

    # -- the hub's timer --------------------------------------------------

    def tick(self, now: float) -> None:
        if self._paused_at is None:
            self._request.write(PING)
        elif now - self._paused_at > self._hub.max_paused_seconds:
            self.disconnect()


class StreamHub(Service):
    """
    All open streams of one server: one shared timer pings them and evicts
    the stalled ones (a timer per stream would cost more than the streams).
    """

    def __init__(
        self,
        broker: Broker,
        store: MessageStore,
        metrics: Metrics,
        clock: Callable[[], float],
        reactor: object,
        *,
        ping_interval: float = 15.0,
        max_queued_bytes: int = 512 * 1024,
        max_paused_seconds: float = 60.0,
        max_per_recipient: int = 0,
        max_per_client: int = 0,
    ) -> None:
        """
        @param max_queued_bytes: what one stream may hold in memory
            (backlog page, held and queued events) before it is cut.
        @param max_per_recipient: open streams per handle; C{0}: no cap.
        @param max_per_client: open streams per client IP; C{0}: no cap.
        """
        self.broker = broker
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.ping_interval = ping_interval
        self.max_queued_bytes = max_queued_bytes
        self.max_paused_seconds = max_paused_seconds
        self.max_per_recipient = max_per_recipient
        self.max_per_client = max_per_client
        self._streams: set[EventStream] = set()
        self._by_recipient: dict[str, int] = {}
        self._by_client: dict[str, int] = {}
        self._timer = LoopingCall(self._tick)
        self._timer.clock = reactor

    def open(
        self, request: IRequest, recipient: str, resume_after: int | None, client: str = ""
    ) -> Deferred[bytes]:
        """
        Turn C{request} into a live stream of C{recipient}'s messages,
        replaying those after C{resume_after} first when given. The
        Deferred fires when the stream ends.

        @param client: the client IP, for the per-client cap.
        @raise KezError: C{rate_limited} past a cap (nothing is written).
        """
        self._check_cap(self._by_recipient, recipient, self.max_per_recipient, "handle")
        self._check_cap(self._by_client, client, self.max_per_client, "ip")
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        stream = EventStream(self, request, recipient, resume_after, client)
        self._streams.add(stream)
        self._by_recipient[recipient] = self._by_recipient.get(recipient, 0) + 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self.metrics.streams_open.set(len(self._streams))
        stream.start()
        return stream.done

    def _check_cap(self, counts: dict[str, int], key: str, cap: int, name: str) -> None:
        if cap and counts.get(key, 0) >= cap:
            self.metrics.streams_refused.labels(name).inc()
            raise KezError(
                "rate_limited",
                f"too many open streams for this {name} (at most {cap}); close one first",
                retry_after=max(1, int(self.ping_interval)),
            )

    def _forget(self, stream: EventStream) -> None:
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        pairs = ((self._by_recipient, stream.recipient), (self._by_client, stream.client))
        for counts, key in pairs:
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)
        self.metrics.streams_open.set(len(self._streams))

    def _tick(self) -> None:
        now = self.clock()
        for stream in tuple(self._streams):
            stream.tick(now)

    def __len__(self) -> int:
        return len(self._streams)

    def startService(self) -> None:
        super().startService()
        self._timer.start(self.ping_interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._timer.running:
            self._timer.stop()
        for stream in tuple(self._streams):
            stream.close()
