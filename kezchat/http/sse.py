"""
Server-sent event streams of an inbox (SPEC §3.3).

The guarantees, and how they are kept:

  - I{No gap, no duplicate on resume.} A resuming stream subscribes to the
    broker I{before} it reads the backlog from the database (and, with
    several instances, reads only once the broker confirms the
    subscription), holding live messages aside while it replays. A
    message is published only after its commit, so anything committed
    before the read is in the backlog and anything after is held aside;
    the overlap is removed by seq.
  - I{No gap live.} A recipient's seqs are consecutive when they are
    stored. A live message whose seq jumps past the next one expected (it
    came from another instance, ahead of one still on its way) sends the
    stream back to the database for the missing range first.
  - I{No message left behind.} A live-only stream starts after the
    inbox's latest seq, read before it subscribes (so it is a resume too).
    Once a tick, one query compares every open stream with its inbox's
    latest seq: a message whose announcement was lost (another instance
    stored it and died) reaches streams within a tick.
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
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from kezchat.errors import KezError
from kezchat.http.framewriter import frame_writer
from kezchat.http.streamstate import BEHAVIOUR, TRANSITIONS, Do, Input, Phase
from kezchat.metrics import Metrics
from kezchat.relay.broker import Broker, Subscription
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

    Its state is a L{Phase} and, independently, whether the transport has
    paused it (C{paused_at}, the time it did): while paused, events are
    queued within the byte budget instead of written.
    """

    __slots__ = (
        "_backlog",
        "_backlog_more",
        "_buffered",
        "_dropped_held",
        "_held",
        "_hub",
        "_on_closed",
        "_queue",
        "_request",
        "_subscription",
        "_write_out",
        "client",
        "done",
        "last_sent",
        "paused_at",
        "phase",
        "recipient",
    )

    def __init__(
        self,
        hub: StreamHub,
        request: Request,
        recipient: str,
        last_sent: int | None,
        client: str = "",
        on_closed: Callable[[EventStream], None] = lambda stream: None,
    ) -> None:
        """
        @param hub: the limits, store, broker and metrics the stream uses.
        @param on_closed: told once, when the stream is released.
        """
        self._hub = hub
        self._request = request
        self._on_closed = on_closed
        self.recipient = recipient
        self.client = client
        self.last_sent = last_sent
        self.phase = Phase.LIVE
        self.paused_at: float | None = None
        self._subscription: Subscription | None = None
        self._backlog: deque[StoredMessage] = deque()
        self._backlog_more = False
        self._held: list[StoredMessage] = []
        self._dropped_held = False
        self._queue: deque[bytes] = deque()
        #: bytes this stream holds in memory: backlog page, held live
        #: messages and queued events; bounded by the hub's max_queued_bytes
        self._buffered = 0
        self._write_out: Callable[[bytes], None] = request.write
        self.done: Deferred[bytes] = Deferred(lambda _: self._release())

    def _decide(self, happened: Input) -> Do:
        """
        What to do about C{happened} now (L{BEHAVIOUR}).
        """
        do = BEHAVIOUR[self.phase][happened]
        if do is Do.IMPOSSIBLE:
            raise RuntimeError(f"a stream cannot take {happened.name} while {self.phase.name}")
        return do

    def _enter(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"stream cannot go from {self.phase.name} to {phase.name}")
        self.phase = phase

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

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
        request.notifyFinish().addBoth(lambda _: self._release())
        if self.last_sent is not None:
            self._catch_up()

    def close(self) -> None:
        """
        End the response cleanly (server shutdown).
        """
        if not self.done.called:
            self._release()
            self.done.callback(b"")

    def _release(self) -> None:
        """
        Let go of everything: the subscription, what is held and queued,
        the producer registration. Safe to call more than once.
        """
        if self._decide(Input.RELEASED) is Do.IGNORE:
            return
        self._enter(Phase.CLOSED)
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        self._queue.clear()
        self._held = []
        self._backlog.clear()
        self._buffered = 0
        self._on_closed(self)
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
        do = self._decide(Input.DELIVER)
        if do is Do.HOLD:
            self._hold(message)
            return
        if do is not Do.SEND:
            return
        if self.last_sent is not None:
            if message.seq <= self.last_sent:
                return
            if message.seq > self.last_sent + 1:
                self._hold(message)
                self._catch_up()
                return
        self._send(message)

    def maybe_behind(self, latest: int) -> None:
        """
        The inbox's latest seq is C{latest}: catch up if this stream is
        behind it and not already catching up.
        """
        if (
            self._decide(Input.BEHIND) is Do.CATCH_UP
            and self._subscription is not None
            and self.last_sent is not None
            and latest > self.last_sent
        ):
            self._catch_up()

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
        if self.closed:
            return
        if self.paused_at is None:
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
        self._enter(Phase.READING)
        # messages dropped from the held list before this read are in it
        self._dropped_held = False
        subscription = self._subscription
        if subscription is None:
            return
        # read only once the broker delivers everything announced from
        # now on (at once, except while a subscription spanning instances
        # is being set up): what is committed after the read then arrives
        # live, and is held meanwhile
        subscription.when_ready().addCallback(self._read_page)

    def _read_page(self, _: object = None) -> None:
        if self.closed:
            return
        since = self.last_sent or 0
        budget = max(1, self._hub.max_queued_bytes - self._buffered)
        d = self._hub.store.messages_page(self.recipient, since, MAX_PAGE, budget)
        d.addCallbacks(self._fetched, self._catch_up_failed)

    def _fetched(self, page: Page) -> None:
        if self._decide(Input.PAGE_READ) is not Do.REPLAY:
            return
        self._enter(Phase.REPLAYING)
        self._backlog = deque(page.messages)
        self._backlog_more = page.more
        self._buffered += sum(event_size(m) for m in page.messages)
        self._pump()

    def _pump(self) -> None:
        """
        Write the backlog page while the transport takes it; once it is
        written, read the next page or go live with what was held.
        """
        backlog = self._backlog
        while backlog and self.paused_at is None and self.phase is Phase.REPLAYING:
            message = backlog.popleft()
            self._buffered -= event_size(message)
            if self.last_sent is None or message.seq > self.last_sent:
                self._send(message)
        if backlog or self.paused_at is not None or self.phase is not Phase.REPLAYING:
            return  # resumeProducing pumps again
        if self._backlog_more or self._dropped_held:
            self._catch_up()
            return
        self._enter(Phase.LIVE)
        held, self._held = sorted(self._held, key=lambda m: m.seq), []
        self._buffered -= sum(event_size(m) for m in held)
        for message in held:
            self.deliver(message)

    def _catch_up_failed(self, failure: Failure) -> None:
        if self._decide(Input.PAGE_FAILED) is not Do.DISCONNECT:
            return
        log.failure("reading the backlog of {recipient} failed", failure, recipient=self.recipient)
        # better a reconnect (which resumes) than a silent gap
        self.disconnect()

    # -- IPushProducer ----------------------------------------------------

    def pauseProducing(self) -> None:
        if self.paused_at is None:
            self.paused_at = self._hub.clock()

    def resumeProducing(self) -> None:
        self.paused_at = None
        if self.closed:
            return
        if self._queue:
            data = b"".join(self._queue)
            self._queue.clear()
            self._buffered -= len(data)
            self._request.write(data)
        if self._decide(Input.RESUMED) is Do.PUMP:
            # the rest of the page, or the next one if the last write of
            # a page is what paused us
            self._pump()

    def stopProducing(self) -> None:
        self._release()

    # -- the hub's timer --------------------------------------------------

    def tick(self, now: float) -> None:
        if self.paused_at is None:
            # the same straight-to-the-socket write as an event: one tick
            # pings every open stream in one turn of the reactor, and the
            # transport's path adds two epoll_ctl calls and a later turn
            # to each send
            self._write(PING)
        elif now - self.paused_at > self._hub.max_paused_seconds:
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
        reactor: IReactorTime,
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
        self._looking = False
        self._timer.clock = reactor

    def open(
        self, request: Request, recipient: str, resume_after: int | None, client: str = ""
    ) -> Deferred[bytes]:
        """
        Turn C{request} into a live stream of C{recipient}'s messages,
        replaying those after C{resume_after} first when given. The
        Deferred fires when the stream ends.

        A live-only stream (no C{resume_after}) starts after the inbox's
        latest seq, read before subscribing, exactly like a resume: with
        several instances (or concurrent commits) live messages can arrive
        out of seq order, and a stream that began at whichever came first
        would drop an earlier one arriving second.

        @param client: the client IP, for the per-client cap.
        @raise KezError: C{rate_limited} past a cap (nothing is written).
        """
        self._check_caps(recipient, client)
        if resume_after is None:
            return self.store.last_seqs([recipient]).addCallback(
                lambda last: self._open(request, recipient, last.get(recipient, 0), client)
            )
        return self._open(request, recipient, resume_after, client)

    def _check_caps(self, recipient: str, client: str) -> None:
        self._check_cap(self._by_recipient, recipient, self.max_per_recipient, "handle")
        self._check_cap(self._by_client, client, self.max_per_client, "ip")

    def _open(
        self, request: Request, recipient: str, resume_after: int, client: str
    ) -> Deferred[bytes]:
        if getattr(request, "channel", True) is None:
            return succeed(b"")  # the client left while the seq was read
        # again: other streams may have opened while the seq was read
        self._check_caps(recipient, client)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        stream = EventStream(self, request, recipient, resume_after, client, self._forget)
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
