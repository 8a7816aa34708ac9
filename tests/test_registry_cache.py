"""
The registry's one cache of handle records (used by the relay, the NATS
bridge and the NATS callout): hits spare the real database, misses are
never remembered, and memory is bounded.
"""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from kezchat.registry import RecordCache, Registry, RegistryPolicy
from kezchat.storage.interfaces import HandleRecord
from kezchat.storage.sqlite import SQLiteDatabase, SQLiteRegistryStore
from tests.support import temp_dir


class CountingStore(SQLiteRegistryStore):
    """
    The real SQLite store, counting the lookups that reach it.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        super().__init__(db)
        self.reads: list[str] = []

    def handle(self, fqhn: str) -> Deferred[HandleRecord | None]:
        self.reads.append(fqhn)
        return super().handle(fqhn)

    def by_primary(self, primary: str) -> Deferred[HandleRecord | None]:
        self.reads.append(primary)
        return super().by_primary(primary)


def record(name: str) -> HandleRecord:
    return HandleRecord(name, "kez.lat", KeyPair.generate().primary, time.time())


class RecordCacheTests(TestCase):
    def test_bounded_least_recently_used(self) -> None:
        cache = RecordCache(size=2)
        a, b, c = record("a"), record("b"), record("c")
        cache.put("a", a)
        cache.put("b", b)
        self.assertIs(cache.get("a"), a)  # now b is the oldest
        cache.put("c", c)
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get("b"))
        self.assertIs(cache.get("a"), a)
        self.assertIs(cache.get("c"), c)


class RegistryCacheTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        db = SQLiteDatabase(os.path.join(temp_dir(self), "chat.db"), reactor)
        db.startService()
        self.addCleanup(db.stopService)
        await db.when_ready()
        self.store = CountingStore(db)
        policy = RegistryPolicy("kez.lat", "https://kez.lat", "https://sig.kez.lat")
        self.registry = Registry(self.store, policy, time.time, cache_size=2)
        self.alice = await self.store.add_handle(record("alice"))
        self.store.reads.clear()

    async def test_hits_spare_the_database(self) -> None:
        """
        One read for the first lookup; the same record by fqhn and by
        primary afterwards (the callout's lookup included) costs none.
        """
        self.assertEqual(await self.registry.lookup("alice"), self.alice)
        self.assertEqual(await self.registry.lookup("alice@kez.lat"), self.alice)
        self.assertEqual(await self.registry.by_primary(self.alice.primary), self.alice)
        self.assertEqual(await self.registry.find_primary(self.alice.primary), self.alice)
        self.assertEqual(self.store.reads, ["alice@kez.lat"])

    async def test_misses_are_not_remembered(self) -> None:
        """
        A key registered a moment after a miss is found at once.
        """
        bob = record("bob")
        self.assertIsNone(await self.registry.find_primary(bob.primary))
        await self.store.add_handle(bob)
        self.assertEqual(await self.registry.find_primary(bob.primary), bob)

    async def test_bounded(self) -> None:
        others = [await self.store.add_handle(record(n)) for n in ("bob", "carol")]
        for r in [self.alice, *others]:
            await self.registry.lookup(r.fqhn)
        self.store.reads.clear()
        await self.registry.lookup("alice")  # evicted by the other two
        self.assertEqual(self.store.reads, ["alice@kez.lat"])
