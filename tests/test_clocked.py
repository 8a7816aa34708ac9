"""
Where time is the subject, on L{twisted.internet.task.Clock}: SSE pings
and slow-consumer cut-offs, rate-limit windows, the request deadline, the
retention sweep. No sleeping out an interval; the real-socket tests of the same parts stay in
C{test_relay} and C{test_limits}, for the wire.
"""

from __future__ import annotations

import os
import time

from twisted.application.internet import TimerService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from kezchat.errors import KezError
from kezchat.http.request import KezSite
from kezchat.http.sse import BEHAVIOUR, PING, Do, EventStream, Input, Phase, StreamHub
from kezchat.metrics import Metrics
from kezchat.ratelimit import RateLimiter
from kezchat.relay.broker import LocalBroker
from kezchat.server.config import ChatConfig
from kezchat.server.service import makeService
from kezchat.storage.interfaces import NewMessage, Page, StoredMessage
from tests.support import temp_dir

BOB = "bob@kez.lat"


def message(seq: int, pad: int = 10) -> StoredMessage:
    return StoredMessage(
        recipient=BOB, seq=seq, sender="alice@kez.lat", sender_primary="ed25519:" + "a" * 64,
        envelope='{"p":"%s"}' % ("x" * pad), created_at=time.time(),
    )


class EmptyInbox:
    """
    The store of an inbox nothing was stored in yet: these tests are about
    time, and the wire tests cover the real stores.
    """

    def last_seqs(self, recipients: list[str]) -> Deferred[dict[str, int]]:
        return succeed({})

    def messages_page(
        self, recipient: str, since: int, limit: int, max_bytes: int
    ) -> Deferred[Page]:
        return succeed(Page([], more=False))


class StreamClockTests(SynchronousTestCase):
    """
    One stream on a real C{Request} over Twisted's dummy channel, its hub
    on a C{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.broker = LocalBroker()
        self.metrics = Metrics()
        self.hub = StreamHub(
            self.broker, EmptyInbox(), self.metrics, self.clock.seconds, self.clock,  # type: ignore[arg-type]
            ping_interval=15.0, max_paused_seconds=60.0, max_queued_bytes=4096,
        )
        self.hub.startService()
        self.addCleanup(self.hub.stopService)
        self.channel = DummyChannel()
        # the plain TCP double lacks abortConnection, which a cut-off calls
        self.channel.transport = DummyChannel.SSL()
        request = Request(self.channel)
        request.method, request.clientproto, request.uri = b"GET", b"HTTP/1.1", b"/s"
        self.done = self.hub.open(request, BOB, None)
        [(producer, streaming)] = self.channel.transport.producers
        self.assertTrue(streaming)
        self.stream: EventStream = producer

    def written(self) -> bytes:
        return self.channel.transport.written.getvalue()

    def test_pings_on_the_interval(self) -> None:
        self.clock.advance(14.9)
        self.assertEqual(self.written().count(PING), 0)
        self.clock.advance(0.1)
        self.assertEqual(self.written().count(PING), 1)
        self.clock.pump([15, 15])
        self.assertEqual(self.written().count(PING), 3)

    def test_paused_past_the_limit_is_cut_off(self) -> None:
        """
        A paused stream gets no pings; past C{max_paused_seconds} it is cut
        and counted, and its place in the hub is freed.
        """
        self.stream.pauseProducing()
        self.clock.pump([15] * 4)  # ticks at 15, 30, 45, 60: not past 60 s yet
        self.assertEqual(self.written().count(PING), 0)
        self.assertEqual(self.stream.phase, Phase.LIVE)
        self.clock.advance(15)
        self.assertEqual(self.stream.phase, Phase.CLOSED)
        self.assertEqual(self.metrics.slow_consumer_disconnects._value.get(), 1)
        self.assertEqual(len(self.hub), 0)
        self.assertEqual(self.broker.subscriber_count(BOB), 0)

    def test_resumed_in_time_is_kept(self) -> None:
        self.stream.pauseProducing()
        self.broker.publish(message(1))
        self.broker.publish(message(2))
        self.assertNotIn(b"id: 1", self.written())
        self.clock.pump([15, 15, 15, 14])
        self.stream.resumeProducing()
        self.clock.pump([15] * 5)
        self.assertEqual(self.stream.phase, Phase.LIVE)
        text = self.written()
        self.assertLess(text.index(b"id: 1\n"), text.index(b"id: 2\n"))
        self.assertEqual(self.metrics.slow_consumer_disconnects._value.get(), 0)

    def test_queue_past_its_budget_is_cut_off(self) -> None:
        self.stream.pauseProducing()
        self.broker.publish(message(1, pad=1000))
        self.assertEqual(self.stream.phase, Phase.LIVE)
        self.broker.publish(message(2, pad=5000))
        self.assertEqual(self.stream.phase, Phase.CLOSED)
        self.assertEqual(self.metrics.slow_consumer_disconnects._value.get(), 1)

    def test_closing_releases_once(self) -> None:
        self.hub.stopService()
        self.assertEqual(self.successResultOf(self.done), b"")
        self.assertEqual(self.stream.phase, Phase.CLOSED)
        self.stream.stopProducing()  # again: nothing happens
        self.assertEqual(len(self.hub), 0)


class PagedInbox:
    """
    A store whose backlog reads wait until the test answers them.
    """

    def __init__(self) -> None:
        self.reads: list[Deferred[Page]] = []

    def last_seqs(self, recipients: list[str]) -> Deferred[dict[str, int]]:
        return succeed({})

    def messages_page(
        self, recipient: str, since: int, limit: int, max_bytes: int
    ) -> Deferred[Page]:
        d: Deferred[Page] = Deferred()
        self.reads.append(d)
        return d


class BehaviourTests(SynchronousTestCase):
    """
    Every (phase, input) pair of L{BEHAVIOUR}, on a real stream: brought
    to the phase, given the input, it does what the table says.
    """

    def test_table_is_complete(self) -> None:
        self.assertEqual(set(BEHAVIOUR), set(Phase))
        for phase, row in BEHAVIOUR.items():
            self.assertEqual(set(row), set(Input), phase)
        self.assertEqual(set(BEHAVIOUR[Phase.CLOSED].values()), {Do.IGNORE})

    def stream_in(self, phase: Phase) -> tuple[EventStream, PagedInbox, DummyChannel, Metrics]:
        """
        A stream resumed after seq 0, brought to C{phase}.
        """
        clock, store, metrics = Clock(), PagedInbox(), Metrics()
        hub = StreamHub(
            LocalBroker(), store, metrics, clock.seconds, clock,  # type: ignore[arg-type]
            max_queued_bytes=1 << 20,
        )
        channel = DummyChannel()
        channel.transport = DummyChannel.SSL()
        request = Request(channel)
        request.method, request.clientproto, request.uri = b"GET", b"HTTP/1.1", b"/s"
        hub.open(request, BOB, 0)
        [(stream, _)] = channel.transport.producers
        self.assertEqual(stream.phase, Phase.READING)
        if phase is Phase.REPLAYING:
            stream.pauseProducing()
            store.reads.pop().callback(Page([message(1), message(2)], more=False))
        elif phase in (Phase.LIVE, Phase.CLOSED):
            store.reads.pop().callback(Page([], more=False))
            if phase is Phase.CLOSED:
                stream.stopProducing()
        self.assertEqual(stream.phase, phase)
        return stream, store, channel, metrics

    def give(self, stream: EventStream, store: PagedInbox, happened: Input) -> None:
        if happened is Input.DELIVER:
            stream.deliver(message(1))
        elif happened is Input.BEHIND:
            stream.maybe_behind(5)
        elif happened is Input.PAGE_READ:
            if store.reads:
                store.reads.pop().callback(Page([message(1)], more=False))
            else:
                stream._fetched(Page([message(1)], more=False))
        elif happened is Input.PAGE_FAILED:
            failure = Failure(OSError("disk"))
            if store.reads:
                store.reads.pop().errback(failure)
            else:
                stream._catch_up_failed(failure)
        elif happened is Input.RESUMED:
            stream.resumeProducing()
        else:
            stream.stopProducing()

    def test_every_pair(self) -> None:
        for phase in Phase:
            for happened in Input:
                with self.subTest(phase=phase.name, input=happened.name):
                    self.check(phase, happened, BEHAVIOUR[phase][happened])

    def check(self, phase: Phase, happened: Input, do: Do) -> None:
        stream, store, channel, metrics = self.stream_in(phase)
        before = channel.transport.written.getvalue()
        if do is Do.IMPOSSIBLE:
            self.assertRaises(RuntimeError, self.give, stream, store, happened)
            return
        self.give(stream, store, happened)
        self.flushLoggedErrors(OSError)
        new = channel.transport.written.getvalue()[len(before):]
        cut = metrics.slow_consumer_disconnects._value.get()
        after = {
            Do.SEND: Phase.LIVE, Do.HOLD: phase, Do.CATCH_UP: Phase.READING,
            # the page is written at once (not paused), and the stream is live
            Do.REPLAY: Phase.LIVE, Do.PUMP: Phase.LIVE, Do.DISCONNECT: Phase.CLOSED,
            Do.RELEASE: Phase.CLOSED, Do.IGNORE: phase,
        }[do]
        self.assertEqual(stream.phase, after)
        self.assertEqual(b"id: 1\n" in new, do in (Do.SEND, Do.PUMP, Do.REPLAY), new)
        self.assertEqual(cut, 1 if do is Do.DISCONNECT else 0)
        # held aside, to be written once the replay is
        self.assertEqual(len(stream._held), 1 if do is Do.HOLD else 0)


class RateLimitClockTests(SynchronousTestCase):
    def test_window(self) -> None:
        """
        2 per minute: the third is refused until a token has come back
        (30 s), and C{retry_after} says so.
        """
        clock = Clock()
        limiter = RateLimiter(2, 60.0, clock.seconds)
        limiter.check("alice")
        limiter.check("alice")
        with self.assertRaises(KezError) as refused:
            limiter.check("alice")
        error = refused.exception
        self.assertEqual((error.code, error.retry_after), ("rate_limited", 30))
        limiter.check("bob")  # budgets are per key
        clock.advance(29)
        self.assertRaises(KezError, limiter.check, "alice")
        clock.advance(30)
        limiter.check("alice")


class DeadlineClockTests(SynchronousTestCase):
    """
    The request deadline of L{KezSite}, on a C{Clock}: a request still
    arriving after it gets a 408 and is cut off.
    """

    def connect(self, deadline: float = 30.0) -> tuple[Clock, StringTransport, object]:
        clock = Clock()
        site = KezSite(Resource(), reactor=clock, request_deadline=deadline)
        channel = site.buildProtocol(None)  # type: ignore[arg-type]
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        return clock, transport, channel

    def assert_408_after(self, data: bytes, deadline: float = 30.0) -> None:
        clock, transport, channel = self.connect(deadline)
        channel.dataReceived(data)  # type: ignore[attr-defined]
        clock.advance(deadline - 0.1)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertIn(b'"code":"request_timeout"', transport.value())

    def test_request_line_too_slow(self) -> None:
        self.assert_408_after(b"GET /v1/heal")

    def test_headers_too_slow(self) -> None:
        self.assert_408_after(b"GET /v1/healthz HTTP/1.1\r\nX-Slow: aaa")

    def test_body_too_slow(self) -> None:
        self.assert_408_after(
            b"POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n{{{", 5.0
        )



class RetentionSweepClockTests(TestCase):
    """
    The retention sweep runs on its timer, here a C{Clock}; the database
    under it is the real one.
    """

    timeout = 30

    async def test_sweeps_on_the_interval(self) -> None:
        config = ChatConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            db=os.path.join(temp_dir(self), "kez-chat.db"),
            retention_bytes=100,
            retention_sweep_seconds=600.0,
        )
        service = makeService(config, reactor)
        [timer] = [s for s in service if isinstance(s, TimerService)]
        clock = Clock()
        timer.clock = clock
        service.startService()
        self.addCleanup(service.stopService)
        await service.parts.db.when_ready()
        # the sweep at start (in several chunks) ends before messages come:
        # its loop schedules the next call once it has
        for _ in range(200):
            if timer._loop.call is not None:  # type: ignore[attr-defined]
                break
            await self.settle()
        store = service.parts.relay.store
        for _ in range(3):
            await store.add_message(NewMessage(
                recipient=BOB, sender="alice@kez.lat", sender_primary="ed25519:" + "a" * 64,
                envelope='{"p":"%s"}' % ("x" * 60), created_at=time.time(),
            ))
        dropped = service.parts.metrics.retention_dropped.labels("quota")
        clock.advance(599)
        await self.settle()
        self.assertEqual(dropped._value.get(), 0)
        clock.advance(1)
        for _ in range(200):
            if dropped._value.get():
                break
            await self.settle()
        # three 70-byte envelopes, 100 bytes allowed: the two oldest go
        self.assertEqual(dropped._value.get(), 2)
        page = await store.messages_page(BOB, 0, 10, 10_000)
        self.assertEqual([m.seq for m in page.messages], [3])

    async def settle(self) -> None:
        """
        A turn of the real reactor, for the database thread to answer.
        """
        d: Deferred[None] = Deferred()
        reactor.callLater(0.01, d.callback, None)
        await d
