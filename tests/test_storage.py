"""
The storage interfaces' contract, run against both backends: every test
talks to the stores only (no HTTP), on a fresh database of the case's
backend. "Instances" are several database services opened on one
database, as several chat-server processes would: what must hold across
processes is checked with them (seqs, idempotency, uniqueness, retention,
sigchain appends).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.server.config import ChatConfig, ChatOptions
from kezchat.sigchain.errors import ChainError
from kezchat.sigserver.config import SigOptions
from kezchat.sigserver.storage import sigchain_storage
from kezchat.sigserver.store import EventRow
from kezchat.startup import StartupError
from kezchat.storage.backend import ChatStorage, chat_storage
from kezchat.storage.dburl import is_postgres_url, pool_settings, redacted
from kezchat.storage.interfaces import (
    HandleRecord,
    HandleTaken,
    IdempotencyConflict,
    NewMessage,
    PrimaryTaken,
    StoredManifest,
    StoredMessage,
)
from tests.backends import on_postgresql
from tests.relaysupport import send
from tests.support import (
    deferred_sleep,
    fresh_database,
    http_client,
    json_of,
    register,
    start_server,
)


def message(
    recipient: str,
    i: int = 0,
    key: str | None = None,
    at: float = 1000.0,
    sender: str = "alice@kez.lat",
    size: int = 0,
) -> NewMessage:
    envelope = f'{{"i":{i},"pad":"{"x" * size}"}}'
    return NewMessage(recipient, sender, "ed25519:" + "a" * 64, envelope, at, key)


async def after(store: Any, recipient: str, since: int, limit: int) -> list[StoredMessage]:
    """
    The messages after C{since}, bounded by count only.
    """
    return (await store.messages_page(recipient, since, limit, 2**62)).messages


class StorageTestCase(TestCase):
    timeout = 60
    db_backend = "sqlite"

    async def setUp(self) -> None:
        self.setting = await fresh_database(self)

    async def open(self) -> ChatStorage:
        """
        One more "instance" on this test's database, started.
        """
        storage = chat_storage(self.setting, reactor)
        storage.db.startService()
        self.addCleanup(storage.db.stopService)
        await storage.db.when_ready()
        return storage


class RegistryTests(StorageTestCase):
    async def test_add_and_find(self) -> None:
        store = (await self.open()).registry
        record = HandleRecord("alice", "kez.lat", "ed25519:" + "1" * 64, 1234.5)
        self.assertEqual(await store.add_handle(record), record)
        self.assertEqual(await store.handle("alice@kez.lat"), record)
        self.assertEqual(await store.by_primary(record.primary), record)
        self.assertIsNone(await store.handle("bob@kez.lat"))
        self.assertIsNone(await store.by_primary("ed25519:" + "2" * 64))

    async def test_handle_and_primary_unique(self) -> None:
        store = (await self.open()).registry
        await store.add_handle(HandleRecord("alice", "kez.lat", "ed25519:" + "1" * 64, 1.0))
        with self.assertRaises(HandleTaken):
            await store.add_handle(HandleRecord("alice", "kez.lat", "ed25519:" + "2" * 64, 2.0))
        with self.assertRaises(PrimaryTaken):
            await store.add_handle(HandleRecord("bob", "kez.lat", "ed25519:" + "1" * 64, 2.0))

    async def test_one_handle_raced_on_three_instances(self) -> None:
        stores = [(await self.open()).registry for _ in range(3)]
        attempts = [
            stores[i % 3].add_handle(
                HandleRecord("race", "kez.lat", f"ed25519:{i:064x}", float(i))
            )
            for i in range(30)
        ]
        results = await DeferredList(attempts, consumeErrors=True)
        won = [r for ok, r in results if ok]
        lost = [r for ok, r in results if not ok]
        self.assertEqual(len(won), 1)
        self.assertTrue(all(f.check(HandleTaken) for f in lost))
        self.assertEqual(await stores[2].handle("race@kez.lat"), won[0])


class MessageTests(StorageTestCase):
    async def test_seqs_per_recipient(self) -> None:
        store = (await self.open()).messages
        seqs = [(await store.add_message(message(r, i))).seq for i, r in
                enumerate(["bob", "bob", "carol", "bob", "carol"])]
        self.assertEqual(seqs, [1, 2, 1, 3, 2])
        page = await after(store, "bob", 1, 10)
        self.assertEqual([m.seq for m in page], [2, 3])
        self.assertEqual(page[0].envelope, '{"i":1,"pad":""}')
        self.assertEqual(page[0].sender_primary, "ed25519:" + "a" * 64)
        self.assertEqual([m.seq for m in await after(store, "bob", 0, 2)], [1, 2])

    async def test_batch_in_input_order(self) -> None:
        store = (await self.open()).messages
        batch = [message("carol", 0), message("bob", 1), message("carol", 2), message("bob", 3)]
        accepted = await store.add_messages(batch)
        self.assertEqual([a.seq for a in accepted], [1, 1, 2, 2])
        self.assertEqual([a.message.envelope for a in accepted], [m.envelope for m in batch])
        self.assertEqual(await store.add_messages([]), [])

    async def test_idempotency(self) -> None:
        store = (await self.open()).messages
        first = await store.add_message(message("bob", 0, key="k", at=10.0))
        again = await store.add_message(message("bob", 1, key="k", at=20.0))
        self.assertFalse(first.duplicate)
        self.assertEqual((again.seq, again.created_at, again.duplicate, again.message),
                         (first.seq, 10.0, True, None))
        # another sender may use the same key
        other = await store.add_message(message("bob", 2, key="k", sender="carol@kez.lat"))
        self.assertEqual((other.seq, other.duplicate), (2, False))
        # a key repeated inside one batch is stored once
        batch = await store.add_messages([message("bob", 3, key="b"), message("bob", 4, key="b")])
        self.assertEqual([(a.seq, a.duplicate) for a in batch], [(3, False), (3, True)])
        self.assertEqual(len(await after(store, "bob", 0, 100)), 3)

    async def test_pages_bounded_by_count_and_bytes(self) -> None:
        store = (await self.open()).messages
        for i in range(5):
            await store.add_message(message("bob", i, size=90))
        size = len(message("bob", 0, size=90).envelope)

        async def page(since: int, limit: int, max_bytes: int) -> tuple[list[int], bool]:
            got = await store.messages_page("bob", since, limit, max_bytes)
            self.assertTrue(all(m.envelope.startswith('{"i":') for m in got.messages))
            return [m.seq for m in got.messages], got.more

        self.assertEqual(await page(0, 10, 2 * size), ([1, 2], True))
        self.assertEqual(await page(0, 10, 2 * size - 1), ([1], True))
        # the first message comes whatever the budget: paging moves on
        self.assertEqual(await page(3, 10, 1), ([4], True))
        self.assertEqual(await page(0, 3, 10**9), ([1, 2, 3], True))
        self.assertEqual(await page(2, 10, 10**9), ([3, 4, 5], False))
        self.assertEqual(await page(2, 3, 3 * size), ([3, 4, 5], False))
        self.assertEqual(await page(5, 10, 10), ([], False))

    async def test_idempotency_conflict(self) -> None:
        store = (await self.open()).messages
        first = replace(message("bob", 0, key="k"), request_hash="h1")
        accepted = await store.add_message(first)
        again = await store.add_message(replace(message("bob", 0, key="k"), request_hash="h1"))
        self.assertEqual((again.seq, again.duplicate), (accepted.seq, True))
        with self.assertRaises(IdempotencyConflict):
            await store.add_message(replace(message("bob", 1, key="k"), request_hash="h2"))
        # a key stored without a hash matches anything
        await store.add_message(message("bob", 2, key="old"))
        old = await store.add_message(replace(message("bob", 3, key="old"), request_hash="h3"))
        self.assertTrue(old.duplicate)
        self.assertEqual(len(await after(store, "bob", 0, 10)), 2)

    async def test_last_seqs(self) -> None:
        store = (await self.open()).messages
        self.assertEqual(await store.last_seqs(["bob"]), {})
        for i in range(3):
            await store.add_message(message("bob", i))
        await store.add_message(message("carol"))
        await store.delete_upto("bob", 3)
        self.assertEqual(await store.last_seqs(["bob", "carol", "dave"]), {"bob": 3, "carol": 1})
        # many at once
        await store.add_messages([message(f"u{i}") for i in range(700)])
        latest = await store.last_seqs([f"u{i}" for i in range(700)] + ["bob"])
        self.assertEqual(len(latest), 701)
        self.assertEqual(set(latest.values()), {1, 3})

    async def test_delete_never_reuses_seqs(self) -> None:
        store = (await self.open()).messages
        for i in range(5):
            await store.add_message(message("bob", i))
        self.assertEqual(await store.delete_upto("bob", 3), 3)
        self.assertEqual(await store.delete_upto("bob", 3), 0)
        self.assertEqual([m.seq for m in await after(store, "bob", 0, 10)], [4, 5])
        await store.delete_upto("bob", 5)
        self.assertEqual((await store.add_message(message("bob"))).seq, 6)

    async def test_retention(self) -> None:
        store = (await self.open()).messages
        await store.add_message(message("bob", 0, key="old", at=10.0))
        await store.add_message(message("bob", 1, at=10.0))
        for i in range(2, 6):
            await store.add_message(message("carol", i, at=100.0, size=90))
        await store.add_message(message("bob", 6, at=100.0))
        size = len(message("carol", 2, size=90).envelope)
        report = await store.apply_retention(50.0, 2 * size + 1)
        small = len(message("bob").envelope)
        self.assertEqual((report.expired, report.expired_bytes), (2, 2 * small))
        self.assertEqual((report.over_quota, report.over_quota_bytes), (2, 2 * size))
        self.assertEqual([m.seq for m in await after(store, "carol", 0, 10)], [3, 4])
        self.assertEqual([m.seq for m in await after(store, "bob", 0, 10)], [3])
        # the expired idempotency key is forgotten with its message
        again = await store.add_message(message("bob", 7, key="old", at=200.0))
        self.assertEqual((again.seq, again.duplicate), (4, False))


class ManifestTests(StorageTestCase):
    async def test_put_replace_get(self) -> None:
        store = (await self.open()).manifests
        primary = "ed25519:" + "1" * 64
        self.assertIsNone(await store.manifest(primary))
        blob = bytes(range(256)) * 3
        await store.put_manifest(StoredManifest(primary, blob, "h1", 1.0))
        self.assertEqual(await store.manifest(primary), StoredManifest(primary, blob, "h1", 1.0))
        await store.put_manifest(StoredManifest(primary, b"\x00new", "h2", 2.0))
        replaced = StoredManifest(primary, b"\x00new", "h2", 2.0)
        self.assertEqual(await store.manifest(primary), replaced)


class SchemaTests(StorageTestCase):
    async def test_newer_database_refused(self) -> None:
        storage = await self.open()
        await storage.registry.add_handle(HandleRecord("a", "kez.lat", "ed25519:" + "1" * 64, 1.0))
        await storage.db.stopService()
        await self.bump_version(storage)
        later = chat_storage(self.setting, reactor)
        later.db.startService()
        self.addCleanup(later.db.stopService)
        error = await self.assertFailure(later.db.when_ready(), StartupError)
        self.assertIn("newer than this", str(error))

    async def test_server_domain_recorded(self) -> None:
        async def start(server: str, allow: bool = False) -> ChatStorage:
            storage = chat_storage(
                self.setting, reactor, server=server, allow_server_change=allow
            )
            storage.db.startService()
            self.addCleanup(storage.db.stopService)
            return storage

        first = await start("kez.lat")
        await first.db.when_ready()
        # several instances of the same domain start fine
        second = await start("kez.lat")
        await second.db.when_ready()
        other = await start("other.example")
        error = await self.assertFailure(other.db.when_ready(), StartupError)
        self.assertIn("belongs to server 'kez.lat'", str(error))
        moved = await start("other.example", allow=True)
        await moved.db.when_ready()
        again = await start("kez.lat")
        await self.assertFailure(again.db.when_ready(), StartupError)

    async def test_unreachable_database_refused_at_start(self) -> None:
        if self.db_backend == "sqlite":
            self.setting = "/nonexistent-dir/kez-chat.db"
        else:
            from kezchat.testing.pgsupport import free_port

            self.setting = f"postgresql://kez:secret@127.0.0.1:{free_port()}/nothing"
        storage = chat_storage(self.setting, reactor)
        storage.db.startService()
        self.addCleanup(storage.db.stopService)
        error = await self.assertFailure(storage.db.when_ready(), Exception)
        if self.db_backend == "postgresql":
            self.assertIsInstance(error, StartupError)
            self.assertIn("cannot connect to PostgreSQL at postgresql://kez:***@", str(error))
            self.assertNotIn("secret", str(error))

    async def bump_version(self, storage: ChatStorage) -> None:
        if self.db_backend == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.setting)
            conn.execute("INSERT INTO schema_version VALUES (999, '999_future.sql', 0)")
            conn.commit()
            conn.close()
            return
        import asyncpg

        from kezchat.compat.aio import deferred_from_coroutine

        async def bump() -> None:
            conn = await asyncpg.connect(self.setting)
            await conn.execute("INSERT INTO schema_version VALUES (999, '999_future.sql')")
            await conn.close()

        await deferred_from_coroutine(bump())


class SeveralInstancesTests(StorageTestCase):
    """
    Three database services on one database, writing at once.
    """

    timeout = 120

    async def test_one_inbox_written_from_three_instances(self) -> None:
        stores = [(await self.open()).messages for _ in range(3)]
        sends = [stores[i % 3].add_message(message("bob", i)) for i in range(150)]
        sends += [
            stores[i % 3].add_messages([message("bob", 1000 + i), message("carol", i)])
            for i in range(30)
        ]
        await gatherResults(sends)
        bob = await after(stores[0], "bob", 0, 500)
        self.assertEqual([m.seq for m in bob], list(range(1, 181)))
        self.assertEqual(len({m.envelope for m in bob}), 180)
        carol = await after(stores[1], "carol", 0, 500)
        self.assertEqual([m.seq for m in carol], list(range(1, 31)))

    async def test_idempotency_key_raced_on_three_instances(self) -> None:
        stores = [(await self.open()).messages for _ in range(3)]
        # the same keys (as a redelivered NATS message carries) on every
        # instance, in opposite orders within batches
        keys = [f"nats:e:{i}" for i in range(20)]
        sends = []
        for n, store in enumerate(stores):
            ordered = keys if n % 2 == 0 else list(reversed(keys))
            sends.append(store.add_messages(
                [message("bob" if int(k.split(":")[-1]) % 2 else "carol", 0, key=k)
                 for k in ordered]
            ))
            sends += [store.add_message(message("bob", 0, key=k)) for k in keys[:5]]
        results = await gatherResults(sends)
        flat = [a for r in results for a in (r if isinstance(r, list) else [r])]
        fresh = [a for a in flat if not a.duplicate]
        self.assertEqual(len(fresh), 20)
        stored = await after(stores[0], "bob", 0, 500)
        stored += await after(stores[0], "carol", 0, 500)
        self.assertEqual(len(stored), 20)

    async def test_retention_swept_from_three_instances(self) -> None:
        stores = [(await self.open()).messages for _ in range(3)]
        await stores[0].add_messages([message(f"u{i % 7}", i, at=10.0) for i in range(200)])
        reports = await gatherResults([s.apply_retention(50.0, 10**9) for s in stores * 2])
        self.assertEqual(sum(r.expired for r in reports), 200)
        self.assertEqual(await after(stores[2], "u1", 0, 500), [])

    async def test_sigchain_append_raced_on_three_instances(self) -> None:
        services = []
        for _ in range(3):
            db, store = sigchain_storage(self.setting, reactor)
            db.startService()
            self.addCleanup(db.stopService)
            await db.when_ready()
            services.append(store)
        primary = "ed25519:" + "1" * 64

        def judge(stored: list[EventRow]) -> bool:
            if stored:
                raise ChainError("fork", "seq 1 is taken", 1)
            return True

        attempts = [
            services[i % 3].append(primary, EventRow(1, "add", None, f"h{i}"), f'{{"i":{i}}}',
                                   1.0, judge)
            for i in range(12)
        ]
        results = await DeferredList(attempts, consumeErrors=True)
        self.assertEqual(sum(1 for ok, _ in results if ok), 1)
        self.assertTrue(all(r.check(ChainError) for ok, r in results if not ok))
        self.assertEqual(len(await services[0].events(primary)), 1)


class PostgresOnlyTests(StorageTestCase):
    """
    What only the PostgreSQL backend does: group commit of single sends,
    surviving a restart of the database.
    """

    db_backend = "postgresql"

    async def test_group_commit_isolates_a_bad_message(self) -> None:
        storage = await self.open()
        store = storage.messages
        sends = [store.add_message(message("bob", i)) for i in range(40)]
        # PostgreSQL text cannot hold NUL: the database refuses this one
        bad = NewMessage("bob", "alice@kez.lat", "ed25519:" + "a" * 64, "\x00", 1.0)
        sends.insert(20, store.add_message(bad))
        results = await DeferredList(sends, consumeErrors=True)
        self.assertEqual([ok for ok, _ in results].count(False), 1)
        self.assertFalse(results[20][0])
        self.assertEqual(
            sorted(r.seq for ok, r in results if ok), list(range(1, 41))
        )
        # sends that arrived together shared calls (two go at once, then
        # the rest wait and go together)
        self.assertLess(store.group.calls, 10)
        self.assertEqual(len(await after(store, "bob", 0, 100)), 40)

    async def test_database_restart(self) -> None:
        """
        While PostgreSQL is down, a chat-server on it answers 503 (not 500,
        not a hang) and healthz says degraded; once it is back, the same
        server carries on, nothing restarted.
        """
        from kezchat.testing.pgsupport import PostgresCluster, cluster

        own = PostgresCluster(cluster().bin_dir)
        await deferToThread(own.start)
        self.addCleanup(own.stop)
        url = own.url(await deferred_from_coroutine(own.create_database()))
        server = await start_server(
            self, ChatConfig(listen=("tcp:0:interface=127.0.0.1",), db=url,
                             register_limit=0, send_limit=0),
        )
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        await register(client, server.url, "bob")

        async def health() -> tuple[int, str]:
            response = await client.get(f"{server.url}/v1/healthz")
            return response.code, (await json_of(response))["db"]

        self.assertEqual(await health(), (200, "ok"))
        code, body = await send(client, server.url, alice, "alice", "bob")
        self.assertEqual((code, body["seq"]), (201, 1))
        await deferToThread(own.crash)
        for n in range(3):
            code, body = await send(client, server.url, alice, "alice", "bob", {"down": n})
            self.assertEqual(code, 503, body)
            self.assertEqual(body["error"]["code"], "unavailable")
        self.assertEqual(await health(), (503, "degraded"))
        await deferToThread(own.restart)
        for _ in range(100):
            if await health() == (200, "ok"):
                break
            await deferred_sleep(0.05)
        self.assertEqual(await health(), (200, "ok"))
        code, body = await send(client, server.url, alice, "alice", "bob", {"up": 1})
        self.assertEqual((code, body["seq"]), (201, 2))


class DatabaseSettingTests(SynchronousTestCase):
    def test_which_backend(self) -> None:
        self.assertTrue(is_postgres_url("postgresql://kez@db/kezchat"))
        self.assertTrue(is_postgres_url("postgres://kez@db/kezchat"))
        self.assertFalse(is_postgres_url("kez-chat.db"))
        self.assertFalse(is_postgres_url("/var/lib/postgresql.db"))

    def test_pool_parameters_are_ours(self) -> None:
        url = "postgresql://kez:pw@db:5432/kezchat?pool_max_size=4&sslmode=require&pool_min_size=1"
        self.assertEqual(
            pool_settings(url), ("postgresql://kez:pw@db:5432/kezchat?sslmode=require", 1, 4)
        )
        self.assertEqual(pool_settings("postgresql://db/x"), ("postgresql://db/x", 2, 10))
        # a minimum above the maximum is lowered to it
        self.assertEqual(pool_settings("postgresql://db/x?pool_max_size=1")[1:], (1, 1))
        for bad in ("0", "-1", "x", ""):
            with self.assertRaises(ValueError):
                pool_settings(f"postgresql://db/x?pool_max_size={bad}")

    def test_password_never_logged(self) -> None:
        self.assertEqual(redacted("postgresql://kez:s3cret@db/x"), "postgresql://kez:***@db/x")
        self.assertEqual(redacted("postgresql://kez@db/x"), "postgresql://kez@db/x")

    def test_options_refuse_a_bad_url(self) -> None:
        for options in (ChatOptions(environ={}), SigOptions(environ={})):
            with self.assertRaises(usage.UsageError):
                options.parseOptions(["--db", "postgresql://db/x?pool_max_size=lots"])
        options = ChatOptions(environ={"KEZ_CHAT_DB": "postgresql://db/x?pool_max_size=3"})
        options.parseOptions([])
        self.assertEqual(options.config.db, "postgresql://db/x?pool_max_size=3")

    def test_postgres_needs_the_asyncio_reactor(self) -> None:
        from kezchat.storage.postgres.database import WrongReactorError

        with self.assertRaises(WrongReactorError):
            chat_storage("postgresql://db/x", Clock())


on_postgresql(
    globals(), RegistryTests, MessageTests, ManifestTests, SchemaTests, SeveralInstancesTests
)
