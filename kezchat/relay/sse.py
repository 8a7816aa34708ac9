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
  - I{No message left behind.} A live-only stream starts after the
    inbox's latest seq, read before it subscribes (so it is a resume too).
    Once a tick, one query compares every open stream with its inbox's
    latest seq: a message whose announcement was lost (another instance
    stored it and died) reaches streams within a tick.
  - I{Bounded memory.} The stream is a streaming producer: while the
    transport says pause, events wait in a small queue; a queue past its
    bound, or a pause that lasts too long, disconnects the client. It
    reconnects with C{Last-Event-ID} and loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from zope.interface import implementer

from kezchat.metrics import Metrics
from kezchat.relay.broker import Broker, Subscription
from kezchat.relay.items import sse_event
from kezchat.relay.relay import MAX_PAGE
from kezchat.storage.interfaces import MessageStore, StoredMessage

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
        "_backlog_full_page",
        "_catching_up",
        "_held",
        "_hub",
        "_paused_at",
        "_queue",
        "_queued_bytes",
        "_request",
        "_subscription",
        "done",
        "last_sent",
        "recipient",
    )

    def __init__(
        self, hub: StreamHub, request: IRequest, recipient: str, last_sent: int | None
    ) -> None:
        self._hub = hub
        self._request = request
        self.recipient = recipient
        self.last_sent = last_sent
        self._subscription: Subscription | None = None
        self._catching_up = False
        self._backlog: list[StoredMessage] = []
        self._backlog_full_page = False
        self._held: list[StoredMessage] = []
        self._paused_at: float | None = None
        self._queue: list[bytes] = []
        self._queued_bytes = 0
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
            self._held.append(message)
            return
        if self.last_sent is not None:
            if message.seq <= self.last_sent:
                return
            if message.seq > self.last_sent + 1:
                self._held.append(message)
                self._catch_up()
                return
        self._send(message)

    def maybe_behind(self, latest: int) -> None:
        """
        The inbox's latest seq is C{latest}: catch up if this stream is
        behind it and not already catching up.
        """
        if (
            self._subscription is not None
            and not self._catching_up
            and self.last_sent is not None
            and latest > self.last_sent
        ):
            self._catch_up()

    def _send(self, message: StoredMessage) -> None:
        self.last_sent = message.seq
        self._write(sse_event(message))
        self._hub.metrics.messages_delivered.inc()

    def _write(self, data: bytes) -> None:
        if self._subscription is None:
            return
        if self._paused_at is None:
            self._request.write(data)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        if self._queued_bytes > self._hub.max_queued_bytes:
            self.disconnect()

    def _catch_up(self) -> None:
        """
        Replay stored messages after C{last_sent}, a page at a time, only
        as fast as the client reads them (a replay must not look like a
        slow consumer); live messages are held aside meanwhile.
        """
        self._catching_up = True
        since = self.last_sent or 0
        d = self._hub.store.messages_after(self.recipient, since, MAX_PAGE)
        d.addCallbacks(self._fetched, self._catch_up_failed)

    def _fetched(self, messages: list[StoredMessage]) -> None:
        if self._subscription is None:
            return
        self._backlog = messages
        self._backlog_full_page = len(messages) == MAX_PAGE
        self._pump()

    def _pump(self) -> None:
        backlog = self._backlog
        while backlog and self._paused_at is None and self._subscription is not None:
            message = backlog.pop(0)
            if self.last_sent is None or message.seq > self.last_sent:
                self._send(message)
        if backlog or self._paused_at is not None or self._subscription is None:
            return  # resumeProducing pumps again
        if self._backlog_full_page:
            self._catch_up()
            return
        self._catching_up = False
        held, self._held = sorted(self._held, key=lambda m: m.seq), []
        for message in held:
            self.deliver(message)

    def _catch_up_failed(self, failure: object) -> None:
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
            data, self._queue, self._queued_bytes = b"".join(self._queue), [], 0
            self._request.write(data)
        if self._catching_up and self._backlog:
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
    ) -> None:
        self.broker = broker
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.ping_interval = ping_interval
        self.max_queued_bytes = max_queued_bytes
        self.max_paused_seconds = max_paused_seconds
        self._streams: set[EventStream] = set()
        self._timer = LoopingCall(self._tick)
        self._looking = False
        self._timer.clock = reactor

    def open(self, request: IRequest, recipient: str, resume_after: int | None) -> Deferred[bytes]:
        """
        Turn C{request} into a live stream of C{recipient}'s messages,
        replaying those after C{resume_after} first when given. The
        Deferred fires when the stream ends.

        A live-only stream (no C{resume_after}) starts after the inbox's
        latest seq, read before subscribing, exactly like a resume: with
        several instances (or concurrent commits) live messages can arrive
        out of seq order, and a stream that began at whichever came first
        would drop an earlier one arriving second.
        """
        if resume_after is None:
            d = self.store.last_seqs([recipient])
            d.addCallback(lambda last: self._open(request, recipient, last.get(recipient, 0)))
            return d
        return self._open(request, recipient, resume_after)

    def _open(self, request: IRequest, recipient: str, resume_after: int) -> Deferred[bytes]:
        if getattr(request, "channel", True) is None:
            return succeed(b"")  # the client left while the seq was read
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        stream = EventStream(self, request, recipient, resume_after)
        self._streams.add(stream)
        self.metrics.streams_open.set(len(self._streams))
        stream.start()
        return stream.done

    def _forget(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        self.metrics.streams_open.set(len(self._streams))

    def _tick(self) -> None:
        now = self.clock()
        for stream in tuple(self._streams):
            stream.tick(now)
        self._look_for_missed()

    def _look_for_missed(self) -> None:
        """
        Once a tick, one query for the latest seq of every inbox with an
        open stream: a stream behind it catches up from the database. This
        bounds the one case live delivery alone cannot cover: another
        instance stored a message and died before announcing it.
        """
        if self._looking or not self._streams:
            return
        self._looking = True
        recipients = sorted({stream.recipient for stream in self._streams})

        def compare(latest: dict[str, int]) -> None:
            for stream in tuple(self._streams):
                stream.maybe_behind(latest.get(stream.recipient, 0))

        def done(result: object) -> None:
            self._looking = False

        d = self.store.last_seqs(recipients)
        d.addCallback(compare)
        d.addErrback(lambda f: log.failure("looking for missed messages failed", f))
        d.addBoth(done)

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
