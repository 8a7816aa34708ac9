"""
A C{kezchat-admin migrate} that dies midway leaves a target no server
starts on: the copy is one transaction, but the schema was committed
before it, and a schema-only database would let anyone register handles
that exist in the source. Running the migration again completes it.

Dying is simulated by an exception raised from the copy's progress report
after its first table: as when the process is killed, the open transaction
is rolled back (a killed client's connection ends the same way).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.startup import StartupError
from kezchat.storage.backend import chat_storage
from kezchat.testing.pgsupport import fresh_database
from kezchat.tools.migrate import migrate
from tests import test_migrate


class Killed(Exception):
    pass


def die_after_first_table(line: str) -> None:
    raise Killed(line)


class InterruptedMigrationTests(TestCase):
    timeout = 90
    filled_chat_db = test_migrate.MigrateTests.filled_chat_db

    async def test_no_server_starts_on_a_half_migrated_target(self) -> None:
        source, _keys = await self.filled_chat_db()
        target = await fresh_database(self)
        with self.assertRaises(Killed):
            await deferred_from_coroutine(migrate(source, target, die_after_first_table))
        storage = chat_storage(target, reactor)
        storage.db.startService()
        self.addCleanup(storage.db.stopService)
        error = await self.assertFailure(storage.db.when_ready(), StartupError)
        self.assertIn("migrate", str(error))
        # the migration run again fills the target, and servers start on it
        copied = await deferred_from_coroutine(migrate(source, target))
        self.assertEqual(copied.rows["handles"], 3)
        again = chat_storage(target, reactor)
        again.db.startService()
        self.addCleanup(again.db.stopService)
        await again.db.when_ready()
        record = await again.registry.handle("alice@kez.lat")
        self.assertIsNotNone(record)

