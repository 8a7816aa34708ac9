"""
Per-recipient announcements between instances, against a real
nats-server: an instance hears a recipient's announcements only while it
holds a stream for them, and a stream that opens (or reopens, resuming)
while the subscription is being made or torn down neither misses nor
repeats a message.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from kezchat.natsbridge.bridge import NatsBroker, StoredMarker
from kezchat.natsbridge.flush import flush
from kezchat.natsbridge.interest import announcement_subject
from kezchat.relay.broker import Origin
from kezchat.storage.interfaces import StoredMessage
from tests.backends import on_postgresql
from tests.natssupport import asyncio_test
from tests.relaysupport import open_stream, send
from tests.support import deferred_sleep, fresh_database, http_client, register, start_server
from tests.test_nats_bridge import BridgeTestCase, eventually

A = "a" * 64


def message(recipient: str, seq: int) -> StoredMessage:
    return StoredMessage(
        recipient=recipient, seq=seq, sender="alice@kez.lat",
        sender_primary="ed25519:" + A, envelope=f'{{"n":{seq}}}', created_at=1.0,
    )


async def until(check: Any, timeout: float = 5.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} not met within {timeout}s")


class AnnouncementSubjectTests(BridgeTestCase):
    def test_subject_per_recipient(self) -> None:
        """
        One plain token per recipient, whatever characters the handle has.
        """
        subjects = {announcement_subject(h) for h in ["bob@kez.lat", "b.o*b@kez.lat", "bob@x"]}
        self.assertEqual(len(subjects), 3)
        for subject in subjects:
            root, token = subject.rsplit(".", 1)
            self.assertEqual(root, "kezchat.stored")
            self.assertRegex(token, r"^[0-9a-f]{32}$")


class FlushTests(BridgeTestCase):
    @asyncio_test
    async def test_flush_covers_an_earlier_subscription(self) -> None:
        """
        After L{flush}, a subscription made before it receives what
        another connection publishes next. (With nats-py's own flush,
        3-5 % of these messages were lost: its PING can leave before the
        SUB.)
        """
        publisher, subscriber = await self.connect_service(), await self.connect_service()
        for n in range(60):
            got: list[Any] = []

            async def cb(msg: Any, got: list[Any] = got) -> None:
                got.append(msg)

            sub = await subscriber.subscribe(f"race.{n}", cb=cb)
            await flush(subscriber)
            await publisher.publish(f"race.{n}", b"hi")
            await until(lambda got=got: got, timeout=3, what=f"message {n}")
            await sub.unsubscribe()


class InterestTests(BridgeTestCase):
    """
    Two brokers on their own connections, as two instances would be.
    """

    async def brokers(self) -> tuple[NatsBroker, NatsBroker]:
        pair = []
        for _ in range(2):
            broker = NatsBroker(lambda fqhn: "ed25519:" + A, StoredMarker(b"seed"))
            await broker.start(await self.connect_service())
            self.addCleanup(lambda b=broker: asyncio.ensure_future(b.stop()))
            pair.append(broker)
        return pair[0], pair[1]

    @asyncio_test
    async def test_ready_means_routed(self) -> None:
        """
        Once a subscription says it is ready, a message another instance
        announces right away reaches it: a stream that reads its backlog
        at that moment cannot fall between the backlog and live delivery.
        (Without waiting for the server's confirmation, about half of
        these announcements overtook the subscription.)
        """
        sender, receiver = await self.brokers()
        for n in range(40):
            recipient = f"r{n}@kez.lat"
            got: list[StoredMessage] = []
            sub = receiver.subscribe(recipient, got.append)
            await sub.when_ready().asFuture(asyncio.get_running_loop())
            sender.publish(message(recipient, 1), origin=Origin.NATS)
            await until(lambda got=got: got, timeout=3, what=f"message {n}")
            self.assertEqual(got, [message(recipient, 1)])
            sub.cancel()

    @asyncio_test
    async def test_only_instances_with_a_stream_hear(self) -> None:
        """
        An instance without a stream for a recipient hears none of their
        announcements; once its last stream closes it unsubscribes.
        """
        sender, receiver = await self.brokers()
        got: list[StoredMessage] = []
        sub = receiver.subscribe("bob@kez.lat", got.append)
        await sub.when_ready().asFuture(asyncio.get_running_loop())
        for seq in range(1, 6):
            sender.publish(message("bob@kez.lat", seq), origin=Origin.NATS)
            sender.publish(message("carol@kez.lat", seq), origin=Origin.NATS)
        await until(lambda: len(got) == 5)
        await self.flush(sender, receiver)
        self.assertEqual([m.seq for m in got], [1, 2, 3, 4, 5])
        self.assertEqual((receiver.heard, sender.heard), (5, 0))
        self.assertEqual(len(receiver.interests), 1)

        sub.cancel()
        await until(lambda: len(receiver.interests) == 0)
        sender.publish(message("bob@kez.lat", 6), origin=Origin.NATS)
        await self.flush(sender, receiver)
        self.assertEqual((receiver.heard, len(got)), (5, 5))

    @asyncio_test
    async def test_subscribe_unsubscribe_churn(self) -> None:
        """
        Streams opening and closing faster than the server answers end
        with one subscription while one stream is open (so a message is
        delivered once, not once per stale subscription) and none after.
        """
        sender, receiver = await self.brokers()
        got: list[StoredMessage] = []
        for n in range(60):
            sub = receiver.subscribe("bob@kez.lat", got.append)
            if n % 7 == 3:
                await asyncio.sleep(0)
            if n < 59:
                sub.cancel()
        await sub.when_ready().asFuture(asyncio.get_running_loop())
        sender.publish(message("bob@kez.lat", 1), origin=Origin.NATS)
        await until(lambda: got)
        await self.flush(sender, receiver)
        self.assertEqual(got, [message("bob@kez.lat", 1)])
        self.assertEqual(len(receiver.interests), 1)
        sub.cancel()
        await until(lambda: len(receiver.interests) == 0)

    async def flush(self, *brokers: NatsBroker) -> None:
        # the outbound queue, then a round trip on each connection
        for broker in brokers:
            assert broker._queue is not None
            await until(broker._queue.empty)
        await asyncio.sleep(0.05)
        for broker in brokers:
            await broker.nc.flush()
        await asyncio.sleep(0.05)


class StreamRaceTests(BridgeTestCase):
    async def test_resume_across_subscribe_races(self) -> None:
        """
        A recipient's only stream on one instance closes and reopens
        (resuming with Last-Event-ID) again and again, each time making
        and dropping that instance's subscription, while messages are
        sent to another instance right as it opens. Each message arrives
        at once (the periodic check is an hour away here), and the
        streams together carry every seq exactly once.
        """
        db = await fresh_database(self)  # one SQLite file, or one PostgreSQL database
        config = replace(self.config(db), sse_ping_seconds=3600.0)
        first = await start_server(self, config)
        second = await start_server(self, config)
        for server in (first, second):
            await eventually(lambda s=server: s.parts.http.nats_status() == "connected")
        client = http_client(self)
        alice, _ = await register(client, first.url, "alice")
        bob, _ = await register(client, first.url, "bob")
        seen: list[int] = []
        for n in range(1, 16):
            stream = await open_stream(
                self, second.url, bob, "bob", last_event_id=seen[-1] if seen else 0
            )
            code, body = await send(client, first.url, alice, "alice", "bob", {"n": n})
            self.assertEqual((code, body["seq"]), (201, n))
            await stream.wait_for(1, timeout=5)
            seen += stream.seqs
            stream.close()
            await stream.ended
            await eventually(lambda: second.parts.broker.subscriber_count("bob@kez.lat") == 0)
            if n % 2:
                await deferred_sleep(0.01)
        self.assertEqual(seen, list(range(1, 16)))


# two instances sharing one PostgreSQL database, as deployed
on_postgresql(globals(), StreamRaceTests)


class RecipientKeyTests(BridgeTestCase):
    @asyncio_test
    async def test_stored_key_names_the_inbox_subject(self) -> None:
        """
        A message stored with its recipient's key (as the relay stores
        every message it accepts) goes on that key's inbox subject without
        the broker asking for the key again; one stored without it is
        looked up.
        """
        asked: list[str] = []
        bob = "b" * 64

        def primary_of(fqhn: str) -> str:
            asked.append(fqhn)
            return "ed25519:" + bob

        broker = NatsBroker(primary_of, StoredMarker(b"seed"))
        await broker.start(await self.connect_service())
        self.addCleanup(lambda: asyncio.ensure_future(broker.stop()))
        listener = await self.connect_service()
        got: list[Any] = []

        async def on_inbox(msg: Any) -> None:
            got.append(msg.subject)

        await listener.subscribe("kez.inbox.>", cb=on_inbox)
        await flush(listener)
        carol = "c" * 64
        known = replace(message("carol@kez.lat", 1), recipient_primary="ed25519:" + carol)
        broker.publish(known, origin=Origin.HTTP)
        await until(lambda: got, what="the known key's inbox message")
        self.assertEqual(got, [f"kez.inbox.{carol}.{A}"])
        self.assertEqual(asked, [])
        broker.publish(message("bob@kez.lat", 1), origin=Origin.HTTP)
        await until(lambda: len(got) == 2, what="the looked-up key's inbox message")
        self.assertEqual(got[1], f"kez.inbox.{bob}.{A}")
        self.assertEqual(asked, ["bob@kez.lat"])
