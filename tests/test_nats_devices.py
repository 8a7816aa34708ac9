"""
Several devices on one key over NATS: each device reads its own durable
consumer C{inbox_<hex>_<device>} and gets every message (and every
sender's copy), against a real nats-server from C{deploy/nats.conf} and a
real chat-server answering the callout.

And the permissions: a connection is granted the consumer of the device
it names and the legacy one, nothing else — never another user's
consumer, never one of its own over a foreign filter.
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig
from twisted.trial.unittest import SynchronousTestCase

from kezchat.client.natsclient import connect_user, fetch_inbox, open_inbox, publish_envelope
from kezchat.protocol.subjects import (
    STREAM,
    check_device,
    consumer_filter,
    consumer_name,
    device_of_connection,
    user_permissions,
)
from tests.relaysupport import send
from tests.support import http_client, register
from tests.test_nats_bridge import BridgeTestCase, nats_


async def read_all(sub: Any, count: int, timeout: float = 10.0) -> list[Any]:
    """
    C{count} messages from a pull subscription (acked), or fail.
    """
    got: list[Any] = []
    for _ in range(int(timeout)):
        for message in await fetch_inbox(sub, batch=count - len(got), timeout=1.0):
            await message.ack()
            got.append(message)
        if len(got) >= count:
            return got
    raise AssertionError(f"{len(got)} of {count} messages arrived")


class DeviceConsumerTests(BridgeTestCase):
    async def parties(self) -> Any:
        server = await self.start_chat()
        self.client = http_client(self)
        self.alice, _ = await register(self.client, server.url, "alice")
        self.bob, _ = await register(self.client, server.url, "bob")
        return server

    async def device(self, keypair: Any, device: str | None) -> tuple[Any, Any]:
        nc = await nats_(connect_user(self.nats.url, keypair, reconnect=False, device=device))
        self.track(nc)
        return nc, await nats_(open_inbox(nc, keypair, device))

    async def test_each_device_gets_every_message(self) -> None:
        """
        Two native clients of bob with different device names both read
        all of alice's messages (sent over HTTP and over NATS); alice's two
        devices both read her copies of them.
        """
        server = await self.parties()
        _, laptop = await self.device(self.bob, "laptop")
        _, phone = await self.device(self.bob, "phone")
        alice_nc, alice_one = await self.device(self.alice, "one")
        _, alice_two = await self.device(self.alice, "two")
        for n in range(3):
            code, _ = await send(self.client, server.url, self.alice, "alice", "bob", {"n": n})
            self.assertEqual(code, 201)
        # the HTTP copies reach the stream after their 201 (the bridge
        # publishes them), a native publish goes straight in: only once they
        # are there is the order of the four fixed
        first = await nats_(read_all(laptop, 3))
        await nats_(publish_envelope(alice_nc, self.alice, self.bob.public_hex, {"n": 3}))
        first += await nats_(read_all(laptop, 1))
        for sub, got in ((laptop, first), (phone, None)):
            got = got or await nats_(read_all(sub, 4))
            self.assertEqual([m.envelope for m in got], [{"n": n} for n in range(4)])
            self.assertEqual({m.direction for m in got}, {"in"})
            self.assertEqual({m.from_primary for m in got}, {self.alice.primary})
        for sub in (alice_one, alice_two):
            got = await nats_(read_all(sub, 4))
            copies = [m for m in got if m.direction == "out"]
            self.assertEqual(
                sorted(m.envelope["n"] for m in copies), [0, 1, 2, 3], [m.envelope for m in got]
            )
            self.assertEqual({m.to_primary for m in copies}, {self.bob.primary})
        consumers = [consumer_name(self.bob.public_hex, d) for d in ("laptop", "phone")]
        service = await nats_(self.connect_service())
        for name in consumers:
            info = await nats_(service.jetstream().consumer_info(STREAM, name))
            self.assertEqual(info.config.filter_subject, consumer_filter(self.bob.public_hex))

    async def test_the_legacy_consumer_still_works(self) -> None:
        server = await self.parties()
        _, legacy = await self.device(self.bob, None)
        await send(self.client, server.url, self.alice, "alice", "bob", {"n": 1})
        [message] = await nats_(read_all(legacy, 1))
        self.assertEqual(message.envelope, {"n": 1})

    async def test_consumers_of_others_are_out_of_reach(self) -> None:
        """
        Bob, connected as his laptop, cannot create, inspect, read or
        delete alice's device consumer, nor create one of his own (or his
        phone's) filtered on alice's messages, nor a device consumer for a
        device he did not connect as.
        """
        await self.parties()
        await self.device(self.alice, "one")
        bob_nc, _ = await self.device(self.bob, "laptop")
        js = bob_nc.jetstream(timeout=1)
        alices = consumer_name(self.alice.public_hex, "one")

        def create(name: str, filter_in_subject: str, filter_in_body: str) -> Any:
            body = {
                "stream_name": STREAM,
                "config": {
                    "name": name,
                    "durable_name": name,
                    "filter_subject": filter_in_body,
                    "ack_policy": "explicit",
                },
            }
            return bob_nc.request(
                f"$JS.API.CONSUMER.CREATE.{STREAM}.{name}.{filter_in_subject}",
                json.dumps(body).encode(),
                timeout=1,
            )

        alice_filter = consumer_filter(self.alice.public_hex)
        bob_filter = consumer_filter(self.bob.public_hex)
        refused = [
            js.consumer_info(STREAM, alices),
            js.delete_consumer(STREAM, alices),
            bob_nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{alices}", b"1", timeout=1),
            create(alices, alice_filter, alice_filter),
            create(consumer_name(self.alice.public_hex, "laptop"), alice_filter, alice_filter),
            create(consumer_name(self.bob.public_hex, "laptop"), alice_filter, alice_filter),
            create(consumer_name(self.bob.public_hex, "phone"), bob_filter, bob_filter),
        ]
        for attempt in refused:
            with self.assertRaises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nats_(attempt)
        # his own name and filter in the subject, alice's in the body: the
        # broker compares the two
        reply = await nats_(
            create(consumer_name(self.bob.public_hex, "laptop"), bob_filter, alice_filter)
        )
        self.assertIn("error", json.loads(reply.data))
        service = await nats_(self.connect_service())
        with self.assertRaises(nats.errors.Error):
            await nats_(
                service.jetstream().consumer_info(
                    STREAM, consumer_name(self.bob.public_hex, "phone")
                )
            )
        # alice's consumer is untouched
        info = await nats_(service.jetstream().consumer_info(STREAM, alices))
        self.assertEqual(info.config.filter_subject, alice_filter)

    async def test_own_device_consumer_created_with_own_rights(self) -> None:
        await self.parties()
        nc = await nats_(connect_user(self.nats.url, self.bob, reconnect=False, device="desk"))
        self.track(nc)
        name = consumer_name(self.bob.public_hex, "desk")
        info = await nats_(
            nc.jetstream().add_consumer(
                STREAM,
                ConsumerConfig(
                    name=name,
                    durable_name=name,
                    filter_subject=consumer_filter(self.bob.public_hex),
                    ack_policy=AckPolicy.EXPLICIT,
                ),
            )
        )
        self.assertEqual(info.name, name)
        self.assertTrue(await nats_(nc.jetstream().delete_consumer(STREAM, name)))


class DeviceNameTests(SynchronousTestCase):
    """
    Device names and the connection names that carry them.
    """

    def test_names(self) -> None:
        self.assertEqual(check_device("a1"), "a1")
        for bad in ("", "A", "a" * 17, "a_b", "a.b", "ü", None, 7):
            with self.assertRaises(ValueError):
                check_device(bad)
        self.assertEqual(device_of_connection("kez:phone"), "phone")
        for other in ("phone", "kez:", "kez:PHONE", "kez:a.b", None, 3):
            self.assertIsNone(device_of_connection(other))

    @given(st.text(max_size=40) | st.text(max_size=20).map(lambda t: "kez:" + t))
    def test_any_connection_name(self, name: str) -> None:
        """
        Whatever a client calls its connection, the device read from it is
        a device name or nothing, and its permissions stay its own.
        """
        device = device_of_connection(name)
        if device is None:
            return
        self.assertEqual(check_device(device), device)
        me = "cd" * 32
        for subject in user_permissions(me, device)["pub"]["allow"]:
            self.assertTrue(me in subject, subject)

    def test_permissions_name_exactly_the_device(self) -> None:
        me = "ab" * 32
        legacy = user_permissions(me)
        phone = user_permissions(me, "phone")
        extra = set(phone["pub"]["allow"]) - set(legacy["pub"]["allow"])
        self.assertEqual(set(legacy["pub"]["allow"]) - set(phone["pub"]["allow"]), set())
        self.assertTrue(extra)
        self.assertTrue(all(f"inbox_{me}_phone" in s for s in extra), extra)
        self.assertEqual(phone["sub"], legacy["sub"])
