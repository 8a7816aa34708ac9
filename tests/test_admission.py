"""
Admission control and bounded background work on both backends.

- A flood of HTTP sends against a database gate held small: every send is
  answered at once with 201 or with 503 C{unavailable} and C{Retry-After}
  (never queued without bound): the jobs and bytes pending never pass the
  gate's bounds (that is what keeps memory and waiting bounded; timings
  are in C{bench/admission.py}), and every 201 is stored.
- PostgreSQL: a call that finds no free connection within the acquire
  timeout fails with C{busy}, it does not wait forever.
- Retention deletes in chunks: many expired rows go in several short
  writes, the counts are right, and keys derived from signatures are
  forgotten once no replay could be accepted, while clients' keys stay.
"""

from __future__ import annotations

import asyncio

from twisted.internet import reactor
from twisted.internet.defer import DeferredSemaphore, gatherResults
from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.storage.backend import ChatStorage, chat_storage
from kezchat.storage.errors import DatabaseUnavailable
from kezchat.storage.gate import JOB_OVERHEAD
from kezchat.storage.interfaces import NewMessage
from tests.backends import on_postgresql
from tests.relaysupport import inbox, message_request
from tests.support import fresh_database, http_client, json_of, register, start_server

FLOOD = 300
PAD = 2048
MAX_JOBS = 6
CONCURRENT = 48


class FloodTests(TestCase):
    timeout = 120
    db_backend = "sqlite"

    async def test_http_send_flood_is_bounded(self) -> None:
        server = await start_server(self)
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        gate = server.parts.db.gate
        gate.max_jobs = MAX_JOBS
        gate.max_bytes = MAX_JOBS * (PAD + 64 + JOB_OVERHEAD)
        requests = [
            message_request(alice, "alice", "bob", {"i": i, "pad": "x" * PAD})
            for i in range(FLOOD)
        ]
        # many at once, though not so many that the listen backlog drops
        # connections on a loaded machine
        at_once = DeferredSemaphore(CONCURRENT)
        responses = await gatherResults([
            at_once.run(client.post, f"{server.url}/v1/messages", data=raw, headers=headers)
            for raw, headers in requests
        ])
        codes = [r.code for r in responses]
        for response in responses:
            body = await json_of(response)
            if response.code == 503:
                self.assertEqual(body["error"]["code"], "unavailable")
                self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertEqual(set(codes) - {201, 503}, set(), codes)
        self.assertGreater(codes.count(503), 0)
        self.assertGreater(codes.count(201), 0)
        self.assertLessEqual(gate.peak_jobs, MAX_JOBS)
        self.assertLessEqual(gate.peak_bytes, gate.max_bytes)
        self.assertEqual((gate.jobs, gate.bytes), (0, 0))
        gate.max_jobs = 1000
        gate.max_bytes = 10**9
        _, page = await inbox(client, server.url, bob, "bob")
        self.assertEqual(len(page["messages"]), codes.count(201))
        refused = server.parts.metrics.db_write_failures.labels("busy")._value.get()
        self.assertEqual(refused, codes.count(503))


class StorageCase(TestCase):
    timeout = 60
    db_backend = "sqlite"

    async def open(self) -> ChatStorage:
        storage = chat_storage(await fresh_database(self), reactor)
        storage.db.startService()
        self.addCleanup(storage.db.stopService)
        await storage.db.when_ready()
        return storage


def new(recipient: str, i: int, at: float, key: str | None = None) -> NewMessage:
    return NewMessage(
        recipient, "alice@kez.lat", "ed25519:" + "a" * 64, f'{{"i":{i},"pad":"{"x" * 40}"}}',
        at, key,
    )


class RetentionChunkTests(StorageCase):
    async def test_sweep_in_chunks(self) -> None:
        storage = await self.open()
        store = storage.messages
        await store.add_messages([new(f"u{i % 3}", i, 10.0) for i in range(1300)])
        # fresh messages, some with a client's key, some with a key made
        # from a signature (longer than a client may choose)
        fresh = [new("u0", i, 100.0, key=f"client-{i}") for i in range(3)]
        fresh += [new("u0", 10 + i, 100.0, key="sig:" + f"{i:0128x}") for i in range(3)]
        await store.add_messages(fresh)
        report = await store.apply_retention(50.0, 10**9, replay_keys_before=200.0)
        self.assertEqual(report.expired, 1300)
        page = await store.messages_page("u0", 0, 100, 10**9)
        self.assertEqual(len(page.messages), 6)
        # a client's key still answers a retry; a signature's key is gone
        again = await store.add_message(new("u0", 0, 300.0, key="client-1"))
        self.assertTrue(again.duplicate)
        again = await store.add_message(new("u0", 10, 300.0, key="sig:" + f"{0:0128x}"))
        self.assertFalse(again.duplicate)



class SQLiteRetentionChunkTests(StorageCase):
    async def test_chunks_are_separate_writes(self) -> None:
        storage = await self.open()
        store, db = storage.messages, storage.db
        await store.add_messages([new("u", i, 10.0) for i in range(1300)])
        before = db.commits  # type: ignore[attr-defined]
        await store.apply_retention(50.0, 10**9)
        # 1,300 rows at 500 a chunk: at least three commits for them
        self.assertGreaterEqual(db.commits - before, 3)  # type: ignore[attr-defined]


class PoolTimeoutTests(StorageCase):
    db_backend = "postgresql"

    async def test_no_free_connection_is_busy(self) -> None:
        from kezchat.storage.postgres import PostgresDatabase
        from kezchat.testing.pgsupport import fresh_database as fresh_postgres

        db = PostgresDatabase(
            await fresh_postgres(self, pool_min_size="1", pool_max_size="1"), reactor,
            acquire_timeout=0.3,
        )
        db.startService()
        self.addCleanup(db.stopService)
        await db.when_ready()
        held = asyncio.Event()
        release = asyncio.Event()

        async def hold(conn: object) -> None:
            held.set()
            await release.wait()

        holding = db.run(hold)
        await deferred_from_coroutine(held.wait())
        with self.assertRaises(DatabaseUnavailable) as caught:
            await db.run(lambda conn: conn.fetchval("SELECT 1"))
        self.assertEqual(caught.exception.cause, "busy")
        release.set()
        await holding
        self.assertEqual(db.health(), "ok")


on_postgresql(globals(), FloodTests, RetentionChunkTests)
