"""
The sender's copy: every accepted message is also added to the sender's own
inbox as an C{out} item, on both storage backends, over HTTP pages, SSE and
NATS, in the same transaction as the recipient's copy (an injected failure
leaves neither), once per message however often a send is retried.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from typing import Any

import nats.errors
from twisted.internet.defer import gatherResults
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.e2e import (
    EnvelopeError,
    open_envelope,
    open_own_envelope,
    seal_envelope,
    text_message,
)
from kezchat.identity.keys import KeyPair
from kezchat.natsbridge.bridge import NatsBroker, StoredMarker, decode_stored, encode_stored
from kezchat.natsbridge.flush import flush
from kezchat.protocol.subjects import consumer_filter, inbox_subject, senders_copy_subject
from kezchat.relay.broker import Origin
from kezchat.storage.interfaces import NewMessage, StoredMessage
from tests.backends import on_postgresql
from tests.natssupport import asyncio_test
from tests.relaysupport import inbox, open_stream, send
from tests.support import fresh_database, http_client, register, start_server
from tests.test_nats_bridge import BridgeTestCase, eventually
from tests.test_nats_interest import until
from tests.test_storage import StorageTestCase

nats_ = deferred_from_coroutine


class SendersCopyTestCase(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.url = self.server.url
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.url, "alice")
        self.bob, _ = await register(self.client, self.url, "bob")

    async def items(self, key: Any, handle: str) -> list[dict[str, Any]]:
        code, page = await inbox(self.client, self.url, key, handle)
        self.assertEqual(code, 200)
        return page["messages"]

    async def inject_failure(self) -> None:
        """
        Make the database refuse every C{out} row, as a failing disk or a
        constraint would, in the middle of storing a message.
        """
        db = self.server.parts.db
        if getattr(self, "db_backend", "sqlite") == "postgresql":
            async def install(conn: Any) -> None:
                await conn.execute(
                    "CREATE FUNCTION kez_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;"
                    " CREATE TRIGGER kez_test_refuse BEFORE INSERT ON messages FOR EACH ROW"
                    " WHEN (NEW.direction = 'out') EXECUTE FUNCTION kez_test_refuse();"
                )

            await db.run(install)
        else:
            await db.write(lambda conn: conn.execute(
                "CREATE TRIGGER kez_test_refuse BEFORE INSERT ON messages"
                " WHEN NEW.direction = 'out' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            ))

    def injected_errors(self) -> tuple[type[BaseException], ...]:
        if getattr(self, "db_backend", "sqlite") == "postgresql":
            import asyncpg

            return (asyncpg.exceptions.RaiseError,)
        return (sqlite3.IntegrityError,)

    async def remove_failure(self) -> None:
        db = self.server.parts.db
        if getattr(self, "db_backend", "sqlite") == "postgresql":
            async def drop(conn: Any) -> None:
                await conn.execute("DROP TRIGGER kez_test_refuse ON messages")

            await db.run(drop)
        else:
            await db.write(lambda conn: conn.execute("DROP TRIGGER kez_test_refuse"))


class SendersCopyTests(SendersCopyTestCase):
    async def test_both_sides_in_both_inboxes(self) -> None:
        """
        Each party's inbox holds the whole conversation in order: what it
        received (C{in}) and what it sent (C{out}, with C{to} and
        C{to_primary}), each numbered in that inbox.
        """
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        self.assertEqual((code, body["seq"]), (201, 1))
        code, body = await send(self.client, self.url, self.bob, "bob", "alice", {"n": 2})
        self.assertEqual((code, body["seq"]), (201, 2))
        alice = await self.items(self.alice, "alice")
        self.assertEqual(
            [(m["seq"], m["direction"], m["envelope"]) for m in alice],
            [(1, "out", {"n": 1}), (2, "in", {"n": 2})],
        )
        out, received = alice
        self.assertEqual(out["to"], "bob@kez.lat")
        self.assertEqual(out["to_primary"], self.bob.primary)
        self.assertEqual((out["from"], out["from_primary"]), ("alice@kez.lat", self.alice.primary))
        self.assertNotIn("to", received)
        self.assertEqual(received["from"], "bob@kez.lat")
        bob = await self.items(self.bob, "bob")
        self.assertEqual(
            [(m["seq"], m["direction"], m.get("to")) for m in bob],
            [(1, "in", None), (2, "out", "alice@kez.lat")],
        )
        # "last": how far each inbox goes, counting both directions
        code, page = await inbox(self.client, self.url, self.bob, "bob", since=1, limit=1)
        self.assertEqual((code, page["next"], page["last"]), (200, 2, 2))

    async def test_the_sender_opens_its_own_copy(self) -> None:
        envelope = seal_envelope(self.alice, self.bob.primary, text_message("hi bob"))
        await send(self.client, self.url, self.alice, "alice", "bob", envelope)
        [copy] = await self.items(self.alice, "alice")
        opened = open_own_envelope(
            copy["envelope"], self.alice, expected_recipient=copy["to_primary"]
        )
        self.assertEqual(opened.plaintext, text_message("hi bob"))
        [item] = await self.items(self.bob, "bob")
        self.assertEqual(open_envelope(item["envelope"], self.bob).plaintext, opened.plaintext)

    async def test_streams_of_the_sender_get_the_copy(self) -> None:
        """
        Every stream the sender holds (two devices) gets the copy live; a
        stream resumed from an earlier seq replays it.
        """
        first = await open_stream(self, self.url, self.alice, "alice")
        second = await open_stream(self, self.url, self.alice, "alice")
        await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        await send(self.client, self.url, self.bob, "bob", "alice", {"n": 2})
        for stream in (first, second):
            await stream.wait_for(2)
            self.assertEqual(
                [(m["seq"], m["direction"]) for m in stream.items()], [(1, "out"), (2, "in")]
            )
            self.assertEqual(stream.items()[0]["to"], "bob@kez.lat")
        resumed = await open_stream(self, self.url, self.alice, "alice", last_event_id=0)
        await resumed.wait_for(2)
        self.assertEqual(resumed.items(), first.items())

    async def test_retries_store_one_copy(self) -> None:
        """
        A retry with the same idempotency key, and the same signed request
        repeated, store neither copy again.
        """
        for _ in range(3):
            _code, body = await send(
                self.client, self.url, self.alice, "alice", "bob", {"n": 1},
                idempotency_key="once",
            )
            self.assertEqual(body["seq"], 1)
        self.assertEqual(len(await self.items(self.alice, "alice")), 1)
        self.assertEqual(len(await self.items(self.bob, "bob")), 1)

    async def test_message_to_oneself_is_kept_once(self) -> None:
        """
        A note to oneself is already in one's own inbox: one item, C{in}.
        """
        code, body = await send(self.client, self.url, self.alice, "alice", "alice", {"note": 1})
        self.assertEqual((code, body["seq"]), (201, 1))
        [item] = await self.items(self.alice, "alice")
        self.assertEqual((item["direction"], item["from"]), ("in", "alice@kez.lat"))

    async def test_an_injected_failure_stores_neither_copy(self) -> None:
        """
        When the sender's copy cannot be stored, the recipient's is not
        stored either, and no seq is used up: the two are one transaction.
        """
        await self.inject_failure()
        code, _ = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        # both databases report a trigger's refusal as the write's own
        # fault (storage.errors.Rejected), answered 400 and not logged as
        # a server failure
        self.assertEqual(code, 400)
        await self.remove_failure()
        self.assertEqual(await self.items(self.bob, "bob"), [])
        self.assertEqual(await self.items(self.alice, "alice"), [])
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 2})
        self.assertEqual((code, body["seq"]), (201, 1))
        self.assertEqual([m["seq"] for m in await self.items(self.alice, "alice")], [1])

    async def test_retention_counts_the_copy(self) -> None:
        relay = self.server.parts.relay
        await send(self.client, self.url, self.alice, "alice", "bob", {"pad": "x" * 2000})
        await send(self.client, self.url, self.bob, "bob", "alice", {"n": 1})
        # alice's cap fits bob's small message, not her own large copy
        await relay.apply_retention(max_age=3600, max_bytes=500)
        self.assertEqual(
            [m["direction"] for m in await self.items(self.alice, "alice")], ["in"]
        )
        self.assertEqual(
            [m["direction"] for m in await self.items(self.bob, "bob")], ["out"]
        )


on_postgresql(globals(), SendersCopyTests)


class NatsSendersCopyTests(BridgeTestCase):
    """
    Over NATS the copy travels on C{kez.inbox.<sender>.out.<recipient>}:
    under the sender's own C{kez.inbox.<sender>.>} (subscription and
    consumers as granted today), and with five tokens, which no user may
    publish on.
    """

    async def setUpParties(self) -> Any:
        server = await self.start_chat()
        client = http_client(self)
        self.alice, _ = await register(client, server.url, "alice")
        self.bob, _ = await register(client, server.url, "bob")
        self.client = client
        return server

    async def test_http_send_copy_reaches_the_senders_native_client(self) -> None:
        server = await self.setUpParties()
        _nc, queue = await self.subscribe_native(self.alice)
        code, _ = await send(self.client, server.url, self.alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201)
        msg = await nats_(asyncio.wait_for(queue.get(), 5))
        self.assertEqual(
            msg.subject, senders_copy_subject(self.alice.public_hex, self.bob.public_hex)
        )
        self.assertEqual(json.loads(msg.data), {"n": 1})

    async def test_native_send_copy_reaches_http_sse_and_nats(self) -> None:
        """
        A message alice publishes natively is stored for bob and, in the
        same transaction, for alice; her SSE stream, her inbox pages and
        her native subscription all get the copy.
        """
        server = await self.setUpParties()
        stream = await open_stream(self, server.url, self.alice, "alice")
        nc, queue = await self.subscribe_native(self.alice)
        subject = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        await nats_(nc.jetstream().publish(subject, b'{"n": 7}'))
        await stream.wait_for(1)
        [item] = stream.items()
        self.assertEqual(
            (item["direction"], item["to"], item["to_primary"], item["envelope"]),
            ("out", "bob@kez.lat", self.bob.primary, {"n": 7}),
        )
        copies = []
        while len(copies) < 1:
            msg = await nats_(asyncio.wait_for(queue.get(), 5))
            if msg.subject != subject:  # her own publication is on bob's subject
                copies.append(msg)
        self.assertEqual(
            copies[0].subject, senders_copy_subject(self.alice.public_hex, self.bob.public_hex)
        )
        _code, page = await inbox(self.client, server.url, self.alice, "alice")
        self.assertEqual([m["direction"] for m in page["messages"]], ["out"])
        _code, page = await inbox(self.client, server.url, self.bob, "bob")
        self.assertEqual([m["envelope"] for m in page["messages"]], [{"n": 7}])

    async def test_a_user_cannot_forge_a_copy(self) -> None:
        """
        Nobody but the chat-server publishes on a copy subject: not even
        the owner of the inbox it lies under.
        """
        server = await self.setUpParties()
        nc = await nats_(self.connect_user(self.alice))
        forged = senders_copy_subject(self.bob.public_hex, self.alice.public_hex)
        own = senders_copy_subject(self.alice.public_hex, self.bob.public_hex)
        for subject in (forged, own):
            with self.assertRaises((nats.errors.Error, asyncio.TimeoutError)):
                await nats_(nc.jetstream(timeout=2).publish(subject, b'{"n": 1}'))
        _code, page = await inbox(self.client, server.url, self.bob, "bob")
        self.assertEqual(page["messages"], [])
        # and yet it lies under alice's own consumer filter
        self.assertTrue(own.startswith(consumer_filter(self.alice.public_hex)[:-1]))


class SendersCopyAnnouncementTests(BridgeTestCase):
    """
    Between instances, a sender's copy is announced on the sender's own
    per-recipient subject: an instance holding a stream for the sender
    delivers it at once, one holding a stream only for the recipient gets
    the recipient's copy alone, and one holding none hears nothing.
    """

    async def brokers(self, n: int) -> list[NatsBroker]:
        brokers = []
        for _ in range(n):
            broker = NatsBroker(lambda fqhn: "ed25519:" + "b" * 64, StoredMarker(b"seed"))
            await broker.start(await self.connect_service())
            self.addCleanup(lambda b=broker: asyncio.ensure_future(b.stop()))
            brokers.append(broker)
        return brokers

    @asyncio_test
    async def test_the_copy_goes_to_the_senders_subject_only(self) -> None:
        origin, senders, recipients, idle = await self.brokers(4)
        at_sender: list[StoredMessage] = []
        at_recipient: list[StoredMessage] = []
        loop = asyncio.get_running_loop()
        for broker, who, got in (
            (senders, "alice@kez.lat", at_sender), (recipients, "bob@kez.lat", at_recipient)
        ):
            await broker.subscribe(who, got.append).when_ready().asFuture(loop)
        alice_key, bob_key = "ed25519:" + "a" * 64, "ed25519:" + "b" * 64
        received = StoredMessage("bob@kez.lat", 4, "alice@kez.lat", alice_key, '{"n":1}', 2.0)
        copy = StoredMessage(
            "alice@kez.lat", 9, "alice@kez.lat", alice_key, '{"n":1}', 2.0,
            "out", "bob@kez.lat", bob_key,
        )
        origin.publish(received, origin=Origin.NATS)
        origin.publish(copy, origin=Origin.HTTP)
        await until(lambda: at_sender and at_recipient)
        queue = origin._queue
        assert queue is not None
        await until(queue.empty)
        # a round trip on every connection: whatever was routed is in
        await asyncio.sleep(0.05)
        for broker in (origin, senders, recipients, idle):
            await flush(broker.nc)
        await asyncio.sleep(0.05)
        self.assertEqual(at_sender, [copy])
        self.assertEqual(at_recipient, [received])
        self.assertEqual(
            (senders.heard, recipients.heard, idle.heard, origin.heard), (1, 1, 0, 0)
        )

    async def test_a_copy_sent_on_one_instance_reaches_the_senders_stream_on_another(
        self,
    ) -> None:
        """
        Two instances on one database, the periodic check an hour away:
        alice's stream on the second instance gets her copy of what she
        sent through the first at once (bob's stream is on the first: no
        instance but the second needs anything announced).
        """
        db = await fresh_database(self)
        config = replace(self.config(db), sse_ping_seconds=3600.0)
        first = await start_server(self, config)
        second = await start_server(self, config)
        for server in (first, second):
            await eventually(lambda s=server: s.parts.http.nats_status() == "connected")
        client = http_client(self)
        alice, _ = await register(client, first.url, "alice")
        bob, _ = await register(client, first.url, "bob")
        alices = await open_stream(self, second.url, alice, "alice")
        bobs = await open_stream(self, first.url, bob, "bob")
        code, _ = await send(client, first.url, alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201)
        await alices.wait_for(1, timeout=5)
        await bobs.wait_for(1, timeout=5)
        [mine] = alices.items()
        self.assertEqual(
            (mine["direction"], mine["to"], mine["to_primary"], mine["envelope"]),
            ("out", "bob@kez.lat", bob.primary, {"n": 1}),
        )
        self.assertEqual([m["direction"] for m in bobs.items()], ["in"])


class CrossingSendsTests(StorageTestCase):
    """
    Messages crossing between two inboxes at once, from three instances on
    one database: each takes two counters (recipient's and sender's), in
    one global order, so none deadlocks and both inboxes stay numbered
    1, 2, 3, … with every message once in each.
    """

    timeout = 120

    async def test_crossing_sends_on_three_instances(self) -> None:
        stores = [(await self.open()).messages for _ in range(3)]
        keys = {"alice@kez.lat": "ed25519:" + "a" * 64, "bob@kez.lat": "ed25519:" + "b" * 64}

        def new(i: int) -> NewMessage:
            sender, recipient = ("alice@kez.lat", "bob@kez.lat")[:: 1 if i % 2 else -1]
            return NewMessage(
                recipient, sender, keys[sender], f'{{"i":{i}}}', 1000.0,
                recipient_primary=keys[recipient],
            )

        sends = [stores[i % 3].add_message(new(i)) for i in range(120)]
        sends += [
            stores[i % 3].add_messages([new(1000 + i), new(1001 + i)]) for i in range(0, 40, 2)
        ]
        await gatherResults(sends)
        for owner in keys:
            page = (await stores[0].messages_page(owner, 0, 500, 2**62)).messages
            self.assertEqual([m.seq for m in page], list(range(1, 161)))
            self.assertEqual(len({m.envelope for m in page}), 160)
            outs = [m for m in page if m.direction == "out"]
            self.assertEqual(len(outs), 80)
            [peer] = set(keys) - {owner}
            self.assertEqual({(m.sender, m.to) for m in outs}, {(owner, peer)})


on_postgresql(globals(), CrossingSendsTests)


class OpenOwnEnvelopeTests(SynchronousTestCase):
    """
    Reading one's own sent copy back trusts only one's own signature.
    """

    def setUp(self) -> None:
        self.alice, self.bob, self.carol = (KeyPair.generate() for _ in range(3))
        self.envelope = seal_envelope(self.alice, self.bob.primary, text_message("mine"))

    def code(self, envelope: Any, own: KeyPair, expected: str | None = None) -> str:
        error = self.assertRaises(
            EnvelopeError, open_own_envelope, envelope, own, expected_recipient=expected
        )
        return error.code

    def test_opens_with_the_recipients_secret(self) -> None:
        opened = open_own_envelope(self.envelope, self.alice, expected_recipient=self.bob.primary)
        self.assertEqual(
            (opened.plaintext, opened.recipient), (text_message("mine"), self.bob.primary)
        )

    def test_refusals(self) -> None:
        # someone else's envelope is not one's own sent message
        self.assertEqual(self.code(self.envelope, self.carol), "not_for_us")
        # addressed to another key than the conversation's pinned one
        self.assertEqual(self.code(self.envelope, self.alice, self.carol.primary),
                         "recipient_mismatch")
        # a changed header no longer carries one's signature
        tampered = {**self.envelope, "ts": "2020-01-01T00:00:00Z"}
        self.assertEqual(self.code(tampered, self.alice), "bad_signature")
        # a ciphertext sealed for carol, re-signed by alice, under bob's header
        other = seal_envelope(self.alice, self.carol.primary, text_message("x"))
        moved = {k: v for k, v in {**self.envelope, "ct": other["ct"]}.items() if k != "sig"}
        moved["sig"] = self.alice.sign_jcs(moved)
        self.assertEqual(self.code(moved, self.alice), "decrypt_failed")
        self.assertEqual(self.code({"v": 1}, self.alice), "malformed")


class AnnouncementTests(SynchronousTestCase):
    """
    What one chat-server announces to the others on C{kezchat.stored}
    keeps a sender's copy a sender's copy.
    """

    def test_round_trip(self) -> None:
        copy = StoredMessage(
            "alice@kez.lat", 7, "alice@kez.lat", "ed25519:" + "a" * 64, '{"n":1}', 12.5,
            "out", "bob@kez.lat", "ed25519:" + "b" * 64,
        )
        self.assertEqual(decode_stored(encode_stored(copy)), copy)
        received = StoredMessage("bob@kez.lat", 3, "alice@kez.lat", copy.sender_primary, "{}", 1.0)
        self.assertEqual(decode_stored(encode_stored(received)), received)

    def test_an_older_instances_announcement_is_a_received_item(self) -> None:
        old = b'{"recipient":"bob@kez.lat","seq":1,"sender":"a@kez.lat",' \
              b'"sender_primary":"ed25519:00","created_at":1.0,"envelope":{}}'
        self.assertEqual(decode_stored(old).direction, "in")

    def test_malformed_copy_fields(self) -> None:
        bad = b'{"recipient":"bob@kez.lat","seq":1,"sender":"a@kez.lat",' \
              b'"sender_primary":"ed25519:00","created_at":1.0,"direction":"out","to":7,' \
              b'"envelope":{}}'
        self.assertRaises(TypeError, decode_stored, bad)
