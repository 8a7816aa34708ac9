"""
Two real chat-server processes (C{twistd -r asyncio -n kezchat}) on one
real PostgreSQL database behave as one server for replays and rate
limits: a signed send replayed to the other instance is answered with the
first seq and not stored again, and N instances do not give N times the
send or registration limit.
"""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial import unittest

from kezchat.identity.keys import KeyPair
from kezchat.storage.backend import chat_storage
from kezchat.storage.limits import Hit
from kezchat.testing.pgsupport import fresh_database
from tests.chatprocess import ChatProcess
from tests.relaysupport import inbox, message_request, send
from tests.support import deferred_sleep, http_client, json_of, registration

SEND_LIMIT = 6
REGISTER_LIMIT = 5


class TwoInstancesTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.db = await fresh_database(self, pool_max_size="4")
        self.client = http_client(self)
        args = [
            "--db", self.db,
            "--send-limit", str(SEND_LIMIT),
            "--register-limit", str(REGISTER_LIMIT),
        ]
        self.a, self.b = (ChatProcess(args, os.path.abspath(self.mktemp())) for _ in range(2))
        for instance in (self.a, self.b):
            os.makedirs(instance.workdir)
            instance.start()
            self.addCleanup(instance.stop)
        await gatherResults([ensureDeferred(self.until_ready(i)) for i in (self.a, self.b)])

    async def until_ready(self, instance: ChatProcess, timeout: float = 40.0) -> None:
        for _ in range(int(timeout / 0.1)):
            if not instance.running:
                break
            try:
                health = await json_of(await self.client.get(f"{instance.url}/v1/healthz"))
                if health.get("db") == "ok":
                    return
            except Exception:
                pass
            await deferred_sleep(0.1)
        raise AssertionError(f"instance did not come up:\n{instance.output[-4000:]}")

    async def register(self, instance: ChatProcess, handle: str) -> tuple[int, KeyPair]:
        key = KeyPair.generate()
        response = await self.client.post(
            f"{instance.url}/v1/register", json=registration(key, handle)
        )
        await response.content()
        return response.code, key

    async def test_replay_to_the_other_instance(self) -> None:
        """
        The exact signed request accepted by A (201) and replayed to B is
        answered 200 with A's seq, and stored once; so are copies sent to
        both at the same time.
        """
        _, alice = await self.register(self.a, "alice")
        _, bob = await self.register(self.b, "bob")
        raw, headers = message_request(alice, "alice", "bob", {"ct": "once"})
        first = await self.client.post(f"{self.a.url}/v1/messages", data=raw, headers=headers)
        first_body = await json_of(first)
        self.assertEqual(first.code, 201, first_body)
        again = await self.client.post(f"{self.b.url}/v1/messages", data=raw, headers=headers)
        self.assertEqual((again.code, await json_of(again)), (200, first_body))

        raw2, headers2 = message_request(alice, "alice", "bob", {"ct": "raced"})
        responses = await gatherResults([
            self.client.post(f"{url}/v1/messages", data=raw2, headers=headers2)
            for url in (self.a.url, self.b.url, self.a.url, self.b.url)
        ])
        bodies = [await json_of(r) for r in responses]
        self.assertEqual(sorted(r.code for r in responses), [200, 200, 200, 201])
        self.assertEqual(len({body["seq"] for body in bodies}), 1)

        _, page = await inbox(self.client, self.b.url, bob, "bob")
        self.assertEqual([m["envelope"]["ct"] for m in page["messages"]], ["once", "raced"])

    async def test_send_limit_is_shared(self) -> None:
        """
        A sender alternating between the instances gets the limit in all,
        not the limit on each.
        """
        _, alice = await self.register(self.a, "alice")
        await self.register(self.b, "bob")
        # the limit counts per minute: start well inside one
        while time.time() % 60 > 40:
            await deferred_sleep(1)
        codes = []
        for i in range(3 * SEND_LIMIT):
            instance = (self.a, self.b)[i % 2]
            code, body = await send(self.client, instance.url, alice, "alice", "bob", {"i": i})
            codes.append(code)
            if code == 429:
                self.assertEqual(body["error"]["code"], "rate_limited")
        self.assertEqual(codes, [201] * SEND_LIMIT + [429] * (2 * SEND_LIMIT))

    async def test_registration_limit_is_shared(self) -> None:
        # the limit counts per hour: start well inside one
        while time.time() % 3600 > 3580:
            await deferred_sleep(1)
        codes = []
        for i in range(2 * REGISTER_LIMIT):
            code, _ = await self.register((self.a, self.b)[i % 2], f"user{i}")
            codes.append(code)
        self.assertEqual(codes, [201] * REGISTER_LIMIT + [429] * REGISTER_LIMIT)


class HitCounterTests(unittest.TestCase):
    timeout = 60

    async def test_concurrent_hits_from_two_instances_are_numbered_once(self) -> None:
        """
        Hits on one subject from two database services at once (as two
        instances would) get the numbers 1..n, each exactly once.
        """
        url = await fresh_database(self)
        counters = []
        for _ in range(2):
            storage = chat_storage(url, reactor)
            storage.db.startService()
            self.addCleanup(storage.db.stopService)
            await storage.db.when_ready()
            assert storage.limits is not None
            counters.append(storage.limits)
        hit = Hit("send:alice@kez.lat", 1000, 1060)
        other = Hit("send:bob@kez.lat", 1000, 1060)
        numbers = await gatherResults(
            [counters[i % 2].hit(hit) for i in range(150)]
            + [counters[i % 2].hit(other) for i in range(50)]
        )
        self.assertEqual(sorted(numbers[:150]), list(range(1, 151)))
        self.assertEqual(sorted(numbers[150:]), list(range(1, 51)))
        self.assertEqual(await counters[0].prune(1061), 2)
        self.assertEqual(await counters[1].hit(hit), 1)
