"""
Messages between servers of different domains: queued at once on the
sender's server, delivered server to server in order and exactly once,
across the destination being down and both servers restarting; and what
the receiving server refuses (unsigned, signed for another server, a
sender of another domain, an envelope not from the key the sending
domain serves).

Real in-process servers on fixed loopback ports, wired with C{--resolve}.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from kezchat.federation import s2s
from kezchat.federation.outbound import DELIVERY_PATH
from kezchat.identity.keys import KeyPair
from kezchat.server.config import ChatConfig
from tests.backends import on_postgresql
from tests.chatprocess import free_port
from tests.relaysupport import inbox, send
from tests.support import (
    RunningServer,
    deferred_sleep,
    fresh_database,
    http_client,
    json_of,
    register,
    start_server,
)


class TwoDomains(TestCase):
    """
    a.example and b.example, resolving each other, with alice and bob.
    """

    timeout = 120

    async def setUp(self) -> None:
        self.client = http_client(self)
        self.ports = {"a.example": free_port(), "b.example": free_port()}
        self.dbs = {d: await fresh_database(self) for d in self.ports}
        self.servers: dict[str, RunningServer] = {}
        for domain in self.ports:
            await self.start(domain)
        self.alice, _ = await register(self.client, self.url("a.example"), "alice",
                                       server="a.example")
        self.bob, _ = await register(self.client, self.url("b.example"), "bob",
                                     server="b.example")

    def url(self, domain: str) -> str:
        return f"http://127.0.0.1:{self.ports[domain]}"

    async def start(self, domain: str, **overrides: Any) -> RunningServer:
        others = tuple(f"{d}={self.url(d)}" for d in self.ports if d != domain)
        config = ChatConfig(
            listen=(f"tcp:{self.ports[domain]}:interface=127.0.0.1",),
            db=self.dbs[domain], server=domain, register_limit=0, send_limit=0,
            resolve=others, **overrides,
        )
        server = await start_server(self, config)
        self.servers[domain] = server
        return server

    async def stop(self, domain: str) -> None:
        await self.servers.pop(domain).service.stopService()

    async def say(self, key: KeyPair, sender: str, to: str, n: int) -> tuple[int, Any]:
        domain = sender.split("@")[1]
        return await send(
            self.client, self.url(domain), key, sender, to, {"from": key.primary, "n": n}
        )

    async def received(self, domain: str, key: KeyPair, handle: str, count: int) -> list[Any]:
        """The inbox once it holds C{count} messages (and a moment more)."""
        for _ in range(600):
            code, page = await inbox(self.client, self.url(domain), key, handle)
            assert code == 200, page
            if len(page["messages"]) >= count:
                await deferred_sleep(0.3)
                _, page = await inbox(self.client, self.url(domain), key, handle)
                return page["messages"]
            await deferred_sleep(0.1)
        raise AssertionError(f"{handle} got {len(page['messages'])} of {count}")

    # -- the receiving server's checks --------------------------------------

    async def deliver(
        self, body: dict[str, Any], *, target: str = "b.example", key: KeyPair | None = None,
        sender: str = "a.example", header: str | None = None,
    ) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        if header is None:
            key = key or await self.servers["a.example"].parts.identity.key()
            header = s2s.sign(key, sender, target, "POST", DELIVERY_PATH, raw,
                              int(reactor.seconds()))
        response = await self.client.post(
            f"{self.url('b.example')}{DELIVERY_PATH}", data=raw,
            headers={s2s.HEADER: header, "Content-Type": "application/json"},
        )
        return response.code, await json_of(response)

    def body(self, **changes: Any) -> dict[str, Any]:
        return {"id": 1, "from": "alice@a.example", "to": "bob@b.example",
                "envelope": {"from": self.alice.primary, "n": 0}, **changes}


class DeliveryTests(TwoDomains):
    async def test_chat_both_ways(self) -> None:
        for n in range(3):
            code, answer = await self.say(self.alice, "alice@a.example", "bob@b.example", n)
            self.assertEqual(code, 202, answer)
            self.assertEqual(set(answer), {"queued", "created_at"})
        for n in range(2):
            code, _ = await self.say(self.bob, "bob@b.example", "alice@a.example", n)
            self.assertEqual(code, 202)
        at_bob = await self.received("b.example", self.bob, "bob", 3)
        self.assertEqual([m["envelope"]["n"] for m in at_bob], [0, 1, 2])
        self.assertEqual({m["from"] for m in at_bob}, {"alice@a.example"})
        self.assertEqual({m["from_primary"] for m in at_bob}, {self.alice.primary})
        at_alice = await self.received("a.example", self.alice, "alice", 2)
        self.assertEqual([m["envelope"]["n"] for m in at_alice], [0, 1])
        self.assertEqual({m["from"] for m in at_alice}, {"bob@b.example"})
        metrics = (await (await self.client.get(f"{self.url('a.example')}/metrics")).content())
        for line in (
            b'kezchat_federation_queued_total{destination="b.example"} 3.0',
            b'kezchat_federation_delivered_total{destination="b.example"} 3.0',
            b'kezchat_federation_received_total{origin="b.example"} 2.0',
            b'kezchat_federation_delivery_seconds_count{destination="b.example"} 3.0',
        ):
            self.assertIn(line, metrics)

    async def test_resend_with_the_same_key_is_queued_once(self) -> None:
        args = (self.client, self.url("a.example"), self.alice, "alice@a.example",
                "bob@b.example", {"from": self.alice.primary, "n": 0})
        first = await send(*args, idempotency_key="k1")
        again = await send(*args, idempotency_key="k1")
        self.assertEqual((first[0], again[0]), (202, 200))
        self.assertEqual(first[1]["queued"], again[1]["queued"])
        self.assertEqual(len(await self.received("b.example", self.bob, "bob", 1)), 1)

    async def test_destination_down_and_both_restarted(self) -> None:
        """
        b.example is down while alice sends; a.example restarts with the
        queue in its database; b.example comes back: every message
        arrives once, in order.
        """
        await self.stop("b.example")
        for n in range(5):
            code, _ = await self.say(self.alice, "alice@a.example", "bob@b.example", n)
            self.assertEqual(code, 202)
        await deferred_sleep(1.5)  # a few failed attempts
        await self.stop("a.example")
        await self.start("a.example")
        for n in range(5, 8):
            code, _ = await self.say(self.alice, "alice@a.example", "bob@b.example", n)
            self.assertEqual(code, 202)
        await deferred_sleep(1.0)
        await self.start("b.example")
        at_bob = await self.received("b.example", self.bob, "bob", 8)
        self.assertEqual([m["envelope"]["n"] for m in at_bob], list(range(8)))
        metrics = (await (await self.client.get(f"{self.url('a.example')}/metrics")).content())
        self.assertRegex(
            metrics.decode(),
            r'kezchat_federation_failed_attempts_total\{destination="b.example"\} [1-9]',
        )

    async def refused(self, status: int, code: str, **kw: Any) -> None:
        body = kw.pop("body", None) or self.body()
        got = await self.deliver(body, **kw)
        self.assertEqual((got[0], got[1]["error"]["code"]), (status, code), got)

    async def test_receiver_checks(self) -> None:
        self.assertEqual((await self.deliver(self.body()))[0], 201)
        self.assertEqual((await self.deliver(self.body()))[0], 200)  # the same id: once
        await self.refused(401, "unauthorized", header="")
        await self.refused(401, "bad_signature", target="c.example")
        await self.refused(401, "bad_signature", key=KeyPair.generate())
        await self.refused(400, "wrong_server", body=self.body(**{"from": "carol@c.example"}))
        await self.refused(400, "wrong_server", body=self.body(**{"from": "alice"}))
        await self.refused(
            401, "bad_signature",
            body=self.body(id=2, envelope={"from": KeyPair.generate().primary}),
        )
        await self.refused(404, "unknown_recipient", body=self.body(id=3, to="nobody@b.example"))
        await self.refused(404, "not_found", body=self.body(id=4, **{"from": "ghost@a.example"}))
        await self.refused(400, "bad_request", body=self.body(id="x"))
        messages = await self.received("b.example", self.bob, "bob", 1)
        self.assertEqual(len(messages), 1)

    async def test_federation_off_refuses_deliveries_and_remote_sends(self) -> None:
        await self.stop("b.example")
        await self.start("b.example", federation=False)
        await self.refused(400, "federation_disabled")
        code, answer = await self.say(self.bob, "bob@b.example", "alice@a.example", 0)
        self.assertEqual((code, answer["error"]["code"]), (400, "federation_disabled"))

    async def test_limits(self) -> None:
        """
        A destination that is down holds at most the queue limit (then
        429); a sending server past the per-server limit gets 429.
        """
        await self.stop("b.example")
        await self.stop("a.example")
        await self.start("a.example", federation_queue_limit=2)
        for n in range(2):
            code, _ = await self.say(self.alice, "alice@a.example", "bob@b.example", n)
            self.assertEqual(code, 202)
        code, answer = await self.say(self.alice, "alice@a.example", "bob@b.example", 2)
        self.assertEqual((code, answer["error"]["code"]), (429, "rate_limited"))
        await self.start("b.example", federation_limit=1)
        self.assertEqual(len(await self.received("b.example", self.bob, "bob", 1)), 1)
        await self.refused(429, "rate_limited", body=self.body(id=99))

    async def test_a_delivery_for_one_server_is_refused_by_another(self) -> None:
        """
        Three servers: a delivery a.example signed for b.example, replayed
        byte for byte to c.example (where bob@c.example exists too), is
        refused there; the same a.example key signing for c.example is
        accepted.
        """
        self.ports["c.example"] = free_port()
        self.dbs["c.example"] = await fresh_database(self)
        await self.stop("a.example")
        await self.start("a.example")
        await self.start("c.example")
        await register(self.client, self.url("c.example"), "bob", server="c.example")
        key = await self.servers["a.example"].parts.identity.key()
        raw = json.dumps(self.body(to="bob@c.example")).encode()

        async def post(target: str) -> int:
            header = s2s.sign(key, "a.example", target, "POST", DELIVERY_PATH, raw,
                              int(reactor.seconds()))
            response = await self.client.post(
                f"{self.url('c.example')}{DELIVERY_PATH}", data=raw,
                headers={s2s.HEADER: header, "Content-Type": "application/json"},
            )
            body = await json_of(response)
            return response.code if response.code < 400 else body["error"]["code"]

        self.assertEqual(await post("b.example"), "bad_signature")
        self.assertEqual(await post("c.example"), 201)

    async def test_senders_copy(self) -> None:
        """
        The sender's copy of a message to another server is in the
        sender's own inbox at once (stored with the queue entry), as an
        out item to the remote handle; the message itself reaches bob.
        """
        await self.stop("b.example")
        code, answer = await send(
            self.client, self.url("a.example"), self.alice, "alice@a.example", "bob@b.example",
            {"from": self.alice.primary, "to": self.bob.primary, "n": 7},
        )
        self.assertEqual(code, 202, answer)
        _, page = await inbox(self.client, self.url("a.example"), self.alice, "alice")
        [copy] = page["messages"]
        self.assertEqual(
            (copy["direction"], copy["to"], copy["to_primary"], copy["envelope"]["n"]),
            ("out", "bob@b.example", self.bob.primary, 7),
        )
        await self.start("b.example")
        [got] = await self.received("b.example", self.bob, "bob", 1)
        self.assertEqual((got["from"], got["envelope"]["n"]), ("alice@a.example", 7))

    async def undeliverable(self, count: int) -> list[Any]:
        """alice's inbox once it holds C{count} items."""
        return await self.received("a.example", self.alice, "alice", count)

    async def test_refused_for_good_is_marked_undeliverable(self) -> None:
        """
        A message the destination refuses for good (no such handle there)
        is given up at once: alice's copy is marked undeliverable and a
        notice with the same envelope follows it in her inbox.
        """
        code, answer = await send(
            self.client, self.url("a.example"), self.alice, "alice@a.example",
            "nobody@b.example", {"from": self.alice.primary, "to": self.bob.primary, "n": 3},
        )
        self.assertEqual(code, 202, answer)
        copy, notice = await self.undeliverable(2)
        self.assertEqual(
            [(m["direction"], m["to"], m.get("undeliverable"), m["envelope"]["n"])
             for m in (copy, notice)],
            [("out", "nobody@b.example", True, 3)] * 2,
        )
        self.assertGreater(notice["seq"], copy["seq"])

    async def test_given_up_after_the_retention_period(self) -> None:
        """
        b.example never comes back: after the retention period alice's
        copy is marked undeliverable and the notice added.
        """
        await self.stop("b.example")
        await self.stop("a.example")
        await self.start("a.example", retention_days=3 / 86400)
        code, answer = await send(
            self.client, self.url("a.example"), self.alice, "alice@a.example",
            "bob@b.example", {"from": self.alice.primary, "to": self.bob.primary, "n": 1},
        )
        self.assertEqual(code, 202, answer)
        [copy] = (await inbox(self.client, self.url("a.example"), self.alice, "alice"))[1][
            "messages"]
        self.assertNotIn("undeliverable", copy)
        items = await self.undeliverable(2)
        self.assertEqual(
            [(m["envelope"]["n"], m.get("undeliverable", False)) for m in items],
            [(1, True), (1, True)],
        )

on_postgresql(globals(), DeliveryTests)


class DeliveryBadInputTests(TwoDomains):
    """
    Deliveries correctly signed by a real sending server whose bodies are
    anything but right: each is refused with a SPEC 4xx (never a 500),
    and nothing reaches the inbox.
    """

    async def test_signed_garbage(self) -> None:
        import time

        from hypothesis import given
        from hypothesis import strategies as st
        from twisted.internet.threads import deferToThread

        from tests.test_bad_input import (
            assert_spec_error,
            barrage_settings,
            build_request,
            exchange,
            json_values,
        )

        key = await self.servers["a.example"].parts.identity.key()
        good = self.body()
        fields = st.sampled_from(sorted(good))
        shaped = st.builds(
            lambda drop, field, value: {
                **{k: v for k, v in good.items() if k != drop}, **({field: value})
            },
            st.none() | fields, fields, json_values,
        ).filter(lambda b: b != good)
        bodies = st.one_of(
            shaped.map(lambda b: json.dumps(b).encode()),
            st.binary(max_size=200),
            json_values.map(lambda v: json.dumps(v).encode()),
        )
        port = self.ports["b.example"]

        @barrage_settings
        @given(bodies)
        def prop(raw: bytes) -> None:
            header = s2s.sign(key, "a.example", "b.example", "POST", DELIVERY_PATH, raw,
                              int(time.time()))
            reply = exchange(
                port,
                build_request(b"POST", DELIVERY_PATH.encode(), raw,
                              [(s2s.HEADER.encode(), header.encode())]),
                "POST",
            )
            assert_spec_error(reply, raw[:200])

        await deferToThread(prop)
        _, page = await inbox(self.client, self.url("b.example"), self.bob, "bob")
        self.assertEqual(page["messages"], [])


class LeaseTests(TestCase):
    """
    The delivery lease, on the real database: one holder at a time, taken
    over once it lapses, given up on release.
    """

    timeout = 60

    async def test_one_holder_at_a_time(self) -> None:
        server = await start_server(self)
        store = server.parts.outbound._store
        self.assertTrue(await store.claim("b.example", "one", 1000.0, 30.0))
        self.assertTrue(await store.claim("b.example", "one", 1010.0, 30.0))  # renewed
        self.assertFalse(await store.claim("b.example", "two", 1020.0, 30.0))
        self.assertTrue(await store.claim("c.example", "two", 1020.0, 30.0))
        self.assertTrue(await store.claim("b.example", "two", 1041.0, 30.0))  # lapsed
        self.assertFalse(await store.claim("b.example", "one", 1042.0, 30.0))
        await store.release("b.example", "one")  # not its lease: nothing changes
        self.assertFalse(await store.claim("b.example", "one", 1043.0, 30.0))
        await store.release("b.example", "two")
        self.assertTrue(await store.claim("b.example", "one", 1044.0, 30.0))


on_postgresql(globals(), LeaseTests)
