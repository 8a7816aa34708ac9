"""
Storage owns its errors: a write the database refuses for what it carries
is L{kezchat.storage.errors.Rejected} on both backends, whatever the
driver. HTTP answers it with 400 (never 500), and NATS ingest terminates
the message at once instead of redelivering it forever.

The database is made to refuse a message the way an operator's constraint
(or a value one backend cannot store) would: a CHECK constraint on
PostgreSQL, a trigger on SQLite, refusing envelopes that contain
C{"poison"}.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.natsbridge.ingest import BRIDGE_CONSUMER
from kezchat.protocol.subjects import STREAM, inbox_subject
from kezchat.relay.sendrequest import from_published
from kezchat.storage.errors import DatabaseUnavailable
from tests.backends import on_postgresql
from tests.relaysupport import inbox, send
from tests.support import fresh_database, http_client, register, start_server
from tests.test_nats_bridge import BridgeTestCase, eventually, nats_


async def refuse_poison(case: object, db: str) -> None:
    """
    Make the database itself refuse envelopes containing C{poison}.
    """
    if db.startswith("postgresql://"):
        import asyncpg

        async def alter() -> None:
            conn = await asyncpg.connect(db)
            try:
                await conn.execute(
                    "ALTER TABLE messages ADD CONSTRAINT no_poison"
                    " CHECK (envelope NOT LIKE '%poison%')"
                )
            finally:
                await conn.close()

        await deferred_from_coroutine(alter())
        return
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "CREATE TRIGGER no_poison BEFORE INSERT ON messages"
            " WHEN NEW.envelope LIKE '%poison%'"
            " BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
        )
    finally:
        conn.close()


class RejectedTests(BridgeTestCase):
    db_backend = "sqlite"

    async def start(self) -> None:
        self.db = await fresh_database(self)
        self.server = await start_server(self, replace(self.config(self.db)))
        await eventually(lambda: self.server.parts.http.nats_status() == "connected")
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.server.url, "alice")
        self.bob, _ = await register(self.client, self.server.url, "bob")
        await refuse_poison(self, self.db)

    def dropped(self, reason: str) -> float:
        counter = self.server.parts.metrics.nats_ingest_dropped.labels(reason)
        return counter._value.get()

    async def test_http_send_refused_by_the_database_is_400(self) -> None:
        await self.start()
        code, body = await send(
            self.client, self.server.url, self.alice, "alice", "bob", {"ct": "poison"}
        )
        self.assertEqual((code, body["error"]["code"]), (400, "bad_request"))
        code, _ = await send(self.client, self.server.url, self.alice, "alice", "bob", {"ok": 1})
        self.assertEqual(code, 201)

    async def test_ingest_terminates_a_refused_message_at_once(self) -> None:
        """
        A native message the database refuses is dead-lettered (terminated,
        counted under C{store}) on the first try, never redelivered; the
        good messages around it are stored.
        """
        await self.start()
        nc = await nats_(self.connect_user(self.alice))
        js = nc.jetstream()
        subject = inbox_subject(self.bob.public_hex, self.alice.public_hex)
        for data in (b'{"good":1}', b'{"ct":"poison"}', b'{"good":2}'):
            await nats_(js.publish(subject, data))
        await eventually(lambda: self.dropped("store") >= 1, timeout=15)
        service = await nats_(self.connect_service())
        info = await nats_(service.jetstream().consumer_info(STREAM, BRIDGE_CONSUMER))
        # nothing is waiting for an acknowledgement, nothing was redelivered
        self.assertEqual((info.num_ack_pending, info.num_redelivered), (0, 0))
        _, page = await inbox(self.client, self.server.url, self.bob, "bob")
        self.assertEqual([m["envelope"] for m in page["messages"]], [{"good": 1}, {"good": 2}])
        self.assertEqual(self.dropped("store"), 1)


on_postgresql(globals(), RejectedTests)


class BridgedBatchTests(TestCase):
    timeout = 30

    async def test_nothing_stored_unannounced_when_a_later_check_fails(self) -> None:
        """
        A batch whose second message cannot be judged (the database refuses
        the look-up: busy) stores nothing the relay did not announce: every
        message is judged before any is written.
        """
        server = await start_server(self)
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        relay = server.parts.relay
        for key in (alice, bob):
            await relay.registry.find_primary(key.primary)  # cached: no look-up
        gate = server.parts.db.gate
        # room for one job: a first message's write, if it were issued
        # before the second message's look-up, would fill it
        gate.max_jobs = 1
        batch = [
            from_published(bob.primary, alice.primary, b'{"n":1}', "nats:e:1"),
            from_published(bob.primary, "ed25519:" + "7" * 64, b'{"n":2}', "nats:e:2"),
        ]
        try:
            await relay.accept_bridged(batch)
        except DatabaseUnavailable:
            pass
        gate.max_jobs = 1000
        _, page = await inbox(client, server.url, bob, "bob")
        announced = server.parts.metrics.messages_stored._value.get()
        self.assertEqual(len(page["messages"]), announced)
