"""
The chat-server with NATS: callout from the real registry, the bridge in
both directions, offline delivery through JetStream, several instances on
one broker, and surviving a broker outage — all against a real
nats-server started from C{deploy/nats.conf}.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig
from twisted.internet.task import Clock
from twisted.trial import unittest

from kezchat.compat.aio import WrongReactorError, deferred_from_coroutine
from kezchat.identity.keys import KeyPair
from kezchat.natsbridge.flush import flush
from kezchat.protocol.subjects import STREAM, consumer_filter, consumer_name, inbox_subject
from kezchat.server.config import ChatConfig
from kezchat.server.service import makeService
from tests.natssupport import NatsTestCase
from tests.relaysupport import inbox, open_stream, send
from tests.support import deferred_sleep, http_client, json_of, register, start_server, temp_dir

nats_ = deferred_from_coroutine  # run a nats-py coroutine from a Twisted one


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """
    Wait until C{check()} is true.
    """
    for _ in range(int(timeout / interval)):
        if check():
            return
        await deferred_sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


class BridgeTestCase(NatsTestCase):
    timeout = 90

    def config(self, db: str | None = None) -> ChatConfig:
        if db is None:
            db = os.path.join(temp_dir(self), "kez-chat.db")
        return ChatConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            db=db,
            register_limit=0,
            send_limit=0,
            nats_url=self.nats.url,
            nats_seed=str(self.nats.callout_seed_path),
            callout_issuer_seed=str(self.nats.issuer_seed_path),
        )

    async def start_chat(self, db: str | None = None) -> Any:
        server = await start_server(self, self.config(db))
        await eventually(lambda: server.parts.http.nats_status() == "connected")
        return server

    async def health(self, client: Any, url: str) -> dict[str, Any]:
        return await json_of(await client.get(f"{url}/v1/healthz"))

    async def subscribe_native(self, keypair: KeyPair) -> tuple[Any, asyncio.Queue[Any]]:
        nc = await nats_(self.connect_user(keypair))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await nats_(nc.subscribe(consumer_filter(keypair.public_hex), cb=queue.put))
        await nats_(flush(nc))  # nats-py's own flush may leave the SUB unsent
        return nc, queue


class BridgeTests(BridgeTestCase):
    async def test_healthz_connected(self) -> None:
        server = await self.start_chat()
        client = http_client(self)
        self.assertEqual((await self.health(client, server.url))["nats"], "connected")

    async def test_callout_uses_registry(self) -> None:
        """
        A handle registered over HTTP can log in to NATS with its key; an
        unregistered key cannot.
        """
        server = await self.start_chat()
        key, _ = await register(http_client(self), server.url, "alice")
        nc = await nats_(self.connect_user(key))
        self.assertTrue(nc.is_connected)
        with self.assertRaises(nats.errors.Error):
            await nats_(self.connect_user(KeyPair.generate()))

    async def test_http_message_goes_out_on_nats(self) -> None:
        server = await self.start_chat()
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        _nc, queue = await self.subscribe_native(bob)
        code, _ = await send(client, server.url, alice, "alice", "bob", {"hello": "nats"})
        self.assertEqual(code, 201)
        msg = await nats_(asyncio.wait_for(queue.get(), 5))
        self.assertEqual(msg.subject, inbox_subject(bob.public_hex, alice.public_hex))
        self.assertEqual(json.loads(msg.data), {"hello": "nats"})

    async def test_nats_message_stored_once_and_streamed(self) -> None:
        """
        A native client's message lands in the recipient's inbox once and
        on their SSE stream, with the broker-vouched sender.
        """
        server = await self.start_chat()
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        stream = await open_stream(self, server.url, bob, "bob")
        nc = await nats_(self.connect_user(alice))
        subject = inbox_subject(bob.public_hex, alice.public_hex)
        await nats_(nc.jetstream().publish(subject, b'{"v": 1, "ct": "x"}'))
        await stream.wait_for(1)
        [item] = stream.items()
        self.assertEqual(item["from"], "alice@kez.lat")
        self.assertEqual(item["from_primary"], alice.primary)
        self.assertEqual(item["envelope"], {"v": 1, "ct": "x"})
        await deferred_sleep(0.5)
        code, body = await inbox(client, server.url, bob, "bob")
        self.assertEqual(code, 200)
        self.assertEqual(len(body["messages"]), 1)
        self.assertEqual(stream.seqs, [body["messages"][0]["seq"]])

    async def test_nats_garbage_not_stored(self) -> None:
        server = await self.start_chat()
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        nc = await nats_(self.connect_user(alice))
        js = nc.jetstream()
        subject = inbox_subject(bob.public_hex, alice.public_hex)
        for payload in [b"not json", b"[1,2]", b"\xff\xfe", b"{" * 10]:
            await nats_(js.publish(subject, payload))
        await nats_(js.publish(subject, b'{"ok": true}'))

        async def count() -> int:
            _, body = await inbox(client, server.url, bob, "bob")
            return len(body["messages"])

        for _ in range(100):
            if await count() == 1:
                break
            await deferred_sleep(0.05)
        _, body = await inbox(client, server.url, bob, "bob")
        self.assertEqual([m["envelope"] for m in body["messages"]], [{"ok": True}])

    async def test_offline_recipient_reads_http_message_from_jetstream(self) -> None:
        """
        Bob is offline when alice sends over HTTP; he logs in to NATS later
        and finds the message in his durable consumer.
        """
        server = await self.start_chat()
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        code, _ = await send(client, server.url, alice, "alice", "bob", {"while": "away"})
        self.assertEqual(code, 201)
        await deferred_sleep(0.3)
        nc = await nats_(self.connect_user(bob))
        sub = await nats_(
            nc.jetstream().pull_subscribe(
                consumer_filter(bob.public_hex),
                durable=consumer_name(bob.public_hex),
                stream=STREAM,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
            )
        )
        [msg] = await nats_(sub.fetch(1, timeout=5))
        self.assertEqual(json.loads(msg.data), {"while": "away"})
        await nats_(msg.ack())

    async def test_two_instances(self) -> None:
        """
        Two chat-servers sharing a database and a broker: a message POSTed
        to the first reaches an SSE stream held by the second, and a native
        message is stored once and reaches streams on both.
        """
        db = os.path.join(temp_dir(self), "shared.db")
        first = await self.start_chat(db)
        second = await self.start_chat(db)
        client = http_client(self)
        alice, _ = await register(client, first.url, "alice")
        bob, _ = await register(client, first.url, "bob")
        on_second = await open_stream(self, second.url, bob, "bob")
        on_first = await open_stream(self, first.url, bob, "bob")
        code, _ = await send(client, first.url, alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201)
        await on_second.wait_for(1)
        await on_first.wait_for(1)
        self.assertEqual(on_second.items()[0]["envelope"], {"n": 1})

        nc = await nats_(self.connect_user(alice))
        subject = inbox_subject(bob.public_hex, alice.public_hex)
        await nats_(nc.jetstream().publish(subject, b'{"n": 2}'))
        await on_second.wait_for(2)
        await on_first.wait_for(2)
        await deferred_sleep(0.5)
        _, body = await inbox(client, second.url, bob, "bob")
        self.assertEqual([m["envelope"] for m in body["messages"]], [{"n": 1}, {"n": 2}])
        self.assertEqual(on_first.seqs, on_second.seqs)
        self.assertEqual(on_first.seqs, [m["seq"] for m in body["messages"]])


class OutageTests(BridgeTestCase):
    async def test_survives_broker_outage(self) -> None:
        """
        Kill nats-server while messages flow over HTTP: every send still
        succeeds and reaches SSE; healthz says down. Restart it: the
        callout and the bridge come back without restarting kezchat.
        """
        server = await self.start_chat()
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        stream = await open_stream(self, server.url, bob, "bob")

        code, _ = await send(client, server.url, alice, "alice", "bob", {"n": 0})
        self.assertEqual(code, 201)
        await stream.wait_for(1)

        self.nats.kill()
        for n in range(1, 11):
            code, _ = await send(client, server.url, alice, "alice", "bob", {"n": n})
            self.assertEqual(code, 201)
        await stream.wait_for(11)
        self.assertEqual([i["envelope"]["n"] for i in stream.items()], list(range(11)))
        self.assertEqual((await self.health(client, server.url))["nats"], "down")

        await self.nats.start_async()
        await eventually(lambda: server.parts.http.nats_status() == "connected", timeout=20)
        self.assertEqual((await self.health(client, server.url))["nats"], "connected")

        # The callout answers again...
        _nc, queue = await self.subscribe_native(bob)
        # ...the bridge forwards HTTP messages to NATS again...
        code, _ = await send(client, server.url, alice, "alice", "bob", {"n": 11})
        self.assertEqual(code, 201)
        msg = await nats_(asyncio.wait_for(queue.get(), 5))
        self.assertEqual(json.loads(msg.data), {"n": 11})
        # ...and stores native messages again.
        nc = await nats_(self.connect_user(alice))
        await nats_(
            nc.jetstream().publish(inbox_subject(bob.public_hex, alice.public_hex), b'{"n": 12}')
        )
        await stream.wait_for(13)
        self.assertEqual([i["envelope"]["n"] for i in stream.items()], list(range(13)))

    async def test_starts_while_broker_down(self) -> None:
        """
        A chat-server started before its broker serves HTTP at once and
        picks NATS up when it appears.
        """
        self.nats.stop()
        server = await start_server(self, self.config())
        client = http_client(self)
        self.assertEqual((await self.health(client, server.url))["nats"], "down")
        alice, _ = await register(client, server.url, "alice")
        await self.nats.start_async()
        await eventually(lambda: server.parts.http.nats_status() == "connected", timeout=20)
        nc = await nats_(self.connect_user(alice))
        self.assertTrue(nc.is_connected)


class ReactorTests(unittest.TestCase):
    def test_refuses_other_reactors(self) -> None:
        """
        NATS configured under a reactor that is not asyncio is a clear
        error when the service is built, not a hang later.
        """
        config = ChatConfig(db=":memory:", nats_url="nats://127.0.0.1:1")
        reactor = Clock()
        reactor.running = False
        e = self.assertRaises(WrongReactorError, makeService, config, reactor)
        self.assertIn("-r asyncio", str(e))
