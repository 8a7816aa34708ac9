"""
Faults of the database, over real HTTP against the real server: a full disk
(SQLite's C{max_page_count}), another process holding the write lock, a
writer that cannot run. Each write the database cannot store is a prompt
503 C{unavailable} with C{Retry-After}, never acknowledged; healthz says
C{"db": "degraded"} with 503 meanwhile; both heal by themselves once the
cause is gone; failures are counted by cause.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

from twisted.internet import reactor
from twisted.internet.utils import getProcessValue
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from kezchat.sigchain import bodies, next_event
from kezchat.storage.errors import DatabaseUnavailable
from kezchat.storage.sqlite.database import BUSY_TIMEOUT, SQLiteDatabase
from kezchat.testing.requirements import missing
from tests.crashsupport import free_port, spawn_twistd, until_up
from tests.relaysupport import inbox, message_request, send
from tests.sigsupport import start_sig_server
from tests.support import deferred_sleep, http_client, json_of, register, start_server, temp_dir

#: an envelope big enough to need fresh pages
BIG = {"blob": "x" * 20000}


def set_max_pages(db: SQLiteDatabase, pages: int | None) -> object:
    """
    Cap (or uncap) the writer connection's database size: SQLite then
    fails writes with C{database or disk is full}, as a full disk would.
    """

    def cap(conn: sqlite3.Connection) -> None:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if pages is not None else count}")

    return db.write(cap)


class FaultTestCase(TestCase):
    timeout = 30

    async def healthz(self, url: str) -> tuple[int, dict]:
        response = await self.client.get(f"{url}/v1/healthz")
        return response.code, await json_of(response)

    async def until_healthy(self, url: str, seconds: float = 10.0) -> dict:
        deadline = time.monotonic() + seconds
        while True:
            code, body = await self.healthz(url)
            if code == 200:
                return body
            if time.monotonic() > deadline:
                self.fail(f"healthz still {code} {body}")
            await deferred_sleep(0.1)

    async def metrics(self, url: str) -> str:
        response = await self.client.get(f"{url}/metrics")
        return (await response.content()).decode()


class ChatFaultTests(FaultTestCase):
    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.url = self.server.url
        self.client = http_client(self)
        self.alice, _ = await register(self.client, self.url, "alice")
        self.bob, _ = await register(self.client, self.url, "bob")

    async def stored_ns(self) -> list[int]:
        code, body = await inbox(self.client, self.url, self.bob, "bob")
        self.assertEqual(code, 200, body)
        return [m["envelope"].get("n") for m in body["messages"]]

    async def test_disk_full_is_503_and_heals_by_itself(self) -> None:
        db = self.server.parts.db
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        self.assertEqual(code, 201, body)
        await set_max_pages(db, None)
        started = time.monotonic()
        for n in range(2, 6):
            raw, headers = message_request(self.alice, "alice", "bob", {"n": n, **BIG})
            response = await self.client.post(f"{self.url}/v1/messages", data=raw, headers=headers)
            answer = await json_of(response)
            self.assertEqual(response.code, 503, answer)
            self.assertEqual(answer["error"]["code"], "unavailable")
            self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        self.assertLess(time.monotonic() - started, 5.0)
        code, health = await self.healthz(self.url)
        self.assertEqual((code, health["db"], health["status"]), (503, "degraded", "degraded"))
        self.assertIn('kezchat_db_write_failures_total{cause="disk_full"} 4.0',
                      await self.metrics(self.url))
        # nothing refused was stored
        self.assertEqual(await self.stored_ns(), [1])

        # room again: healthz heals without any other write, then writes work
        await set_max_pages(db, 1_000_000)
        health = await self.until_healthy(self.url)
        self.assertEqual(health["db"], "ok")
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 6, **BIG})
        self.assertEqual(code, 201, body)
        self.assertEqual(await self.stored_ns(), [1, 6])

    async def test_disk_full_heals_through_writes_alone(self) -> None:
        db = self.server.parts.db
        await set_max_pages(db, None)
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1, **BIG})
        self.assertEqual((code, body["error"]["code"]), (503, "unavailable"))
        await set_max_pages(db, 1_000_000)
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 2, **BIG})
        self.assertEqual(code, 201, body)
        self.assertEqual((await self.healthz(self.url))[0], 200)
        self.assertEqual(await self.stored_ns(), [2])

    async def test_locked_database_is_503_within_seconds(self) -> None:
        other = sqlite3.connect(self.server.parts.db.path, isolation_level=None, timeout=0)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 1})
        elapsed = time.monotonic() - started
        self.assertEqual((code, body["error"]["code"]), (503, "unavailable"))
        self.assertLess(elapsed, BUSY_TIMEOUT + 4.0)
        code, health = await self.healthz(self.url)
        self.assertEqual((code, health["db"]), (503, "degraded"))
        self.assertIn('kezchat_db_write_failures_total{cause="busy"} 1.0',
                      await self.metrics(self.url))
        other.execute("COMMIT")
        await self.until_healthy(self.url)
        code, body = await send(self.client, self.url, self.alice, "alice", "bob", {"n": 2})
        self.assertEqual(code, 201, body)
        self.assertEqual(await self.stored_ns(), [2])


class SigFaultTests(FaultTestCase):
    async def test_kezsig_reports_a_locked_database(self) -> None:
        server = await start_sig_server(self)
        self.client = http_client(self)
        key = KeyPair.generate()
        url = server.chain_url(key.public_hex) + "/events"
        event = next_event(key, [], "add_endpoint",
                           bodies.add_endpoint("n", "nats", url="wss://kez.lat/nats"))
        other = sqlite3.connect(server.parts.db.path, isolation_level=None, timeout=0)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        response = await self.client.post(url, json=event)
        answer = await json_of(response)
        self.assertEqual((response.code, answer["error"]["code"]), (503, "unavailable"))
        code, health = await self.healthz(server.url)
        self.assertEqual((code, health["db"]), (503, "degraded"))
        self.assertIn('kezsig_db_write_failures_total{cause="busy"} 1.0',
                      await self.metrics(server.url))
        other.execute("ROLLBACK")
        self.assertEqual((await self.until_healthy(server.url))["db"], "ok")
        response = await self.client.post(url, json=event)
        self.assertEqual(response.code, 201, await response.content())


class _Boom(BaseException):
    """
    Not an C{Exception}: what used to end the writer thread.
    """


class _DiesOnce(SQLiteDatabase):
    """
    A database whose writer thread dies in the middle of its first batch,
    the way an unforeseen bug would end it.
    """

    died = False

    def _run_guarded(self, conn: object, batch: list) -> object:
        if not self.died:
            self.died = True
            raise _Boom()
        return super()._run_guarded(conn, batch)


class WriterTests(TestCase):
    timeout = 20

    def database(self, path: str) -> SQLiteDatabase:
        db = SQLiteDatabase(path, reactor)
        db.startService()
        self.addCleanup(db.stopService)
        return db

    async def test_a_database_that_cannot_open_fails_every_write_at_once(self) -> None:
        db = self.database(os.path.join(temp_dir(self), "no", "such", "dir", "x.db"))
        queued = db.write(lambda conn: 1)
        with self.assertRaises(DatabaseUnavailable) as opening:
            await db.when_ready()
        self.assertEqual(opening.exception.cause, "cannot_open")
        with self.assertRaises(DatabaseUnavailable):
            await queued
        with self.assertRaises(DatabaseUnavailable) as caught:
            await db.write(lambda conn: 2)
        self.assertEqual(caught.exception.cause, "cannot_open")
        self.assertEqual(db.health(), "degraded")

    async def test_nothing_a_job_raises_stops_the_writer(self) -> None:
        db = self.database(os.path.join(temp_dir(self), "x.db"))
        await db.when_ready()

        def boom(conn: sqlite3.Connection) -> None:
            raise _Boom()

        def broken_transaction(conn: sqlite3.Connection) -> None:
            conn.execute("ROLLBACK")  # leaves no savepoint to roll back to
            raise ValueError("the job's own error")

        for job, error in ((boom, _Boom), (broken_transaction, ValueError)):
            with self.assertRaises(error):
                await db.write(job)
            self.assertEqual(await db.write(lambda conn: 7), 7)
        self.assertEqual(db.health(), "ok")

    async def test_a_writer_that_dies_fails_its_jobs_and_is_restarted(self) -> None:
        db = _DiesOnce(os.path.join(temp_dir(self), "x.db"), reactor)
        db.startService()
        self.addCleanup(db.stopService)
        await db.when_ready()
        with self.assertRaises(DatabaseUnavailable) as caught:
            await db.write(lambda conn: 1)
        self.assertEqual(caught.exception.cause, "stopped")
        self.assertEqual(db.health(), "degraded")
        # refused at once while it is down, then served by the new thread
        with self.assertRaises(DatabaseUnavailable):
            await db.write(lambda conn: 2)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.assertEqual(await db.write(lambda conn: 3), 3)
                break
            except DatabaseUnavailable:
                self.assertLess(time.monotonic(), deadline)
                await deferred_sleep(0.1)
        self.assertEqual(db.health(), "ok")

    async def test_after_stop_writes_fail_at_once(self) -> None:
        db = self.database(os.path.join(temp_dir(self), "x.db"))
        await db.when_ready()
        await db.stopService()
        with self.assertRaises(DatabaseUnavailable):
            await db.write(lambda conn: 1)


class RealDiskFullTests(FaultTestCase):
    """
    A real full disk (C{ENOSPC}), not a page cap: a C{twistd kezchat}
    process whose database lives on a 4 MiB tmpfs mounted in a mount
    namespace of its own (root only; the host's mounts are untouched).
    """

    timeout = 60

    async def test_enospc_is_503_and_heals_when_space_is_freed(self) -> None:
        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if os.geteuid() != 0 or unshare is None or nsenter is None:
            raise missing("needs root, unshare and nsenter")
        self.client = http_client(self)
        scratch = temp_dir(self)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process, proto = spawn_twistd(
            self, ["--db", f"{scratch}/chat.db", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            scratch,
            wrapper=[unshare, "--mount", "--propagation", "private", "sh", "-c",
                     f"mount -t tmpfs -o size=4m tmpfs {scratch} && exec \"$0\" \"$@\""],
        )
        await until_up(self, self.client, url, proto)

        async def inside(command: str) -> None:
            await getProcessValue(nsenter, ["-t", str(process.pid), "-m", "sh", "-c", command])

        alice, _ = await register(self.client, url, "alice")
        bob, _ = await register(self.client, url, "bob")
        await inside(f"cat /dev/zero > {scratch}/filler")
        code, body = await send(self.client, url, alice, "alice", "bob", {"n": 1, **BIG})
        self.assertEqual((code, body["error"]["code"]), (503, "unavailable"))
        code, health = await self.healthz(url)
        self.assertEqual((code, health["db"]), (503, "degraded"))
        await inside(f"rm {scratch}/filler")
        await self.until_healthy(url)
        code, body = await send(self.client, url, alice, "alice", "bob", {"n": 2, **BIG})
        self.assertEqual(code, 201, body)
        code, page = await inbox(self.client, url, bob, "bob")
        self.assertEqual([m["envelope"]["n"] for m in page["messages"]], [2])
