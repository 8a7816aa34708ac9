"""
Memory bounded by bytes, not counts: byte-bounded inbox pages and SSE
replays, caps on open streams, and the server's RSS under the resume
attack (measured on a real C{twistd -r asyncio -n kezchat} process).
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.relay.relay import INBOX_PAGE_BYTES
from kezchat.testing.hostile import ChatServer, Client, Holder, connect
from tests.relaysupport import inbox, open_stream, send
from tests.support import deferred_sleep, http_client, register, start_server

BIG = 250 * 1024

#: what the resume attack may add to the server's RSS (measured: ~90 MiB;
#: before byte bounds it took the server past 800 MiB, up to 3 GiB)
RSS_GROWTH_BOUND_MIB = 200


class PagingTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.server.url, "alice")
        self.bob, _ = await register(self.client, self.server.url, "bob")
        for i in range(24):
            code, _ = await send(
                self.client, self.server.url, self.alice, "alice", "bob",
                {"i": i, "ct": "x" * BIG},
            )
            self.assertEqual(code, 201)

    async def test_inbox_page_stops_at_its_byte_budget(self) -> None:
        """
        C{limit=500} over 6 MiB of messages gives a page under the 4 MiB
        budget; following C{next} reads the rest, each message once.
        """
        seen, since, pages = [], 0, 0
        while True:
            code, page = await inbox(self.client, self.server.url, self.bob, "bob", since, 500)
            self.assertEqual(code, 200)
            if not page["messages"]:
                self.assertEqual(page["next"], since)
                break
            pages += 1
            size = sum(len(m["envelope"]["ct"]) for m in page["messages"])
            self.assertLessEqual(size, INBOX_PAGE_BYTES)
            seen += [m["seq"] for m in page["messages"]]
            self.assertEqual(page["next"], seen[-1])
            since = page["next"]
        self.assertEqual(seen, list(range(1, 25)))
        self.assertGreaterEqual(pages, 2)

    async def test_replay_reads_pages_within_the_stream_budget(self) -> None:
        """
        A resuming stream holds at most its budget of backlog, whatever
        the page size, and still gets everything in order.
        """
        hub = self.server.parts.hub
        reads: list[int] = []
        store = hub.store
        original = store.messages_page

        def counting(recipient, since, limit, max_bytes):
            reads.append(max_bytes)
            return original(recipient, since, limit, max_bytes)

        store.messages_page = counting
        self.addCleanup(setattr, store, "messages_page", original)
        stream = await open_stream(self, self.server.url, self.bob, "bob", last_event_id=0)
        await stream.wait_for(24, timeout=30)
        self.assertEqual(stream.seqs, list(range(1, 25)))
        self.assertTrue(reads)
        self.assertTrue(all(budget <= hub.max_queued_bytes for budget in reads))
        self.assertGreaterEqual(len(reads), 24 * BIG // hub.max_queued_bytes)


class StreamCapTests(TestCase):
    timeout = 30

    async def test_caps_per_handle_and_per_ip(self) -> None:
        server = await start_server(self, max_streams_per_handle=2, max_streams_per_ip=3)
        client = http_client(self)
        bob, _ = await register(client, server.url, "bob")
        carol, _ = await register(client, server.url, "carol")
        streams = [await open_stream(self, server.url, bob, "bob") for _ in range(2)]
        self.assertEqual([s.response.code for s in streams], [200, 200])
        third = await open_stream(self, server.url, bob, "bob")
        self.assertEqual(third.response.code, 429)
        self.assertIn(b"rate_limited", third.body)
        self.assertEqual(third.response.headers.getRawHeaders("retry-after") is not None, True)
        other = await open_stream(self, server.url, carol, "carol")
        self.assertEqual(other.response.code, 200)
        by_ip = await open_stream(self, server.url, carol, "carol")
        self.assertEqual(by_ip.response.code, 429)
        # closing one frees its place
        await streams[0].close()
        await deferred_sleep(0.1)
        again = await open_stream(self, server.url, bob, "bob")
        self.assertEqual(again.response.code, 200)
        metrics = (await (await client.get(f"{server.url}/metrics")).content()).decode()
        self.assertIn('kezchat_streams_refused_total{cap="handle"} 1.0', metrics)
        self.assertIn('kezchat_streams_refused_total{cap="ip"} 1.0', metrics)


class ResumeAttackRSSTests(TestCase):
    """
    The attack from the issue, on a real twistd process: an inbox of
    500 × 250 KiB messages, 10 streams resuming from 0 that never read,
    and 8 parallel C{GET ?limit=500}, twice over.
    """

    timeout = 90

    async def test_rss_stays_bounded(self) -> None:
        server = ChatServer(reactor, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.addCleanup(lambda: ensureDeferred(server.stop()))
        await server.start()
        client = Client(reactor, server)
        from kezchat.testing.rawhttp import connect_many

        pool = await connect_many(reactor, "127.0.0.1", server.port, 8)
        victim = await client.register(pool, "victim")
        sender = await client.register(pool, "sender")
        statuses = await pool.blast(
            [client.message(sender, "sender", "victim", i, BIG) for i in range(500)],
            lambda stamp: None,
        )
        await pool.close()
        self.assertEqual(statuses.count(201), 500)
        await deferred_sleep(1.0)
        idle = server.rss_kib()
        server.reset_peak()
        streams = [
            await connect(reactor, server.port, Holder(client.stream(victim, "victim", 0), False))
            for _ in range(10)
        ]
        for _round in range(2):
            readers = [Holder(client.inbox(victim, "victim", 0, 500)) for _ in range(8)]
            for reader in readers:
                await connect(reactor, server.port, reader)
            await gatherResults([r.done for r in readers])
            for r in readers:
                self.assertEqual(r.status(), 200)
                r.transport.loseConnection()
        await deferred_sleep(1.0)
        peak = max(server.status("VmHWM"), server.rss_kib())
        # they were real streams all along (read their heads now)
        for s in streams:
            s.transport.resumeProducing()
        await gatherResults([s.first for s in streams])
        for s in streams:
            self.assertEqual(s.status(), 200)
            s.transport.abortConnection()
        growth = (peak - idle) / 1024
        self.assertLess(
            growth, RSS_GROWTH_BOUND_MIB, f"RSS grew {growth:.0f} MiB (idle {idle // 1024} MiB)"
        )


class ReplayUnderTrafficTests(TestCase):
    timeout = 30

    async def test_held_messages_past_the_budget_are_read_back(self) -> None:
        """
        Messages that arrive while a replay reads the database are held
        aside within the stream's budget; past it they are dropped and
        read back, even when nothing arrives after them to reveal the gap.
        """
        server = await start_server(self)
        hub = server.parts.hub
        hub.max_queued_bytes = 1024  # less than one message: every hold overflows
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        pad = "p" * 2048
        await send(client, server.url, alice, "alice", "bob", {"i": 1, "pad": pad})
        read_done: Deferred[None] = Deferred()
        gate: Deferred[None] = Deferred()
        original = hub.store.messages_page

        async def held_back(d):
            page = await d
            read_done.callback(None)
            await gate
            return page

        def first_read_held_back(*args):
            hub.store.messages_page = original
            return ensureDeferred(held_back(original(*args)))

        hub.store.messages_page = first_read_held_back
        self.addCleanup(setattr, hub.store, "messages_page", original)
        stream = await open_stream(self, server.url, bob, "bob", last_event_id=0)
        await read_done
        for i in (2, 3):
            code, _ = await send(client, server.url, alice, "alice", "bob", {"i": i, "pad": pad})
            self.assertEqual(code, 201)
        gate.callback(None)
        await stream.wait_for(3, timeout=10)
        self.assertEqual(stream.seqs, [1, 2, 3])


class ConfigTests(TestCase):
    def test_caps_from_flags_and_environment(self) -> None:
        from kezchat.server.config import ChatOptions

        options = ChatOptions(
            {"KEZ_CHAT_MAX_STREAMS_PER_HANDLE": "4", "KEZ_CHAT_NATS_STREAM_MAX_BYTES": "1000"}
        )
        options.parseOptions(["--max-streams-per-ip", "9"])
        self.assertEqual(options.config.max_streams_per_handle, 4)
        self.assertEqual(options.config.max_streams_per_ip, 9)
        self.assertEqual(options.config.nats_stream_max_bytes, 1000)
        defaults = ChatOptions({})
        defaults.parseOptions([])
        self.assertEqual(
            (defaults.config.max_streams_per_handle, defaults.config.max_streams_per_ip),
            (32, 256),
        )


class RenderCacheTests(TestCase):
    def test_bounded_in_bytes_and_shared(self) -> None:
        """
        The rendered-event cache never holds more than its byte bound, and
        a cached message renders to the very same bytes object (what every
        stream's transport then holds once).
        """
        from kezchat.relay.items import RenderCache
        from kezchat.storage.interfaces import StoredMessage

        cache = RenderCache(256 * 1024)
        envelope = '{"p":"%s"}' % ("x" * BIG)
        messages = [
            StoredMessage("bob@kez.lat", i, "a@kez.lat", "ed25519:00", envelope, 0.0)
            for i in range(10)
        ]
        for message in messages:
            event = cache(message)
            self.assertLessEqual(cache.size, 256 * 1024)
            self.assertIs(cache(message), event)
        small = StoredMessage("bob@kez.lat", 99, "a@kez.lat", "ed25519:00", "{}", 0.0)
        self.assertIs(cache(small), cache(small))
        self.assertLessEqual(cache.size, 256 * 1024)
