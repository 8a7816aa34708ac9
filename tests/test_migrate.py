"""
C{kezchat-admin migrate}: a SQLite deployment copied into PostgreSQL,
checked table by table against the source, then served by a chat-server
on PostgreSQL that carries on where the old one stopped.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import replace

from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.keylog.merkle import MemoryTree
from kezchat.server.config import ChatConfig
from kezchat.sigserver.storage import sigchain_storage
from kezchat.sigserver.store import EventRow
from kezchat.storage.backend import chat_storage
from kezchat.storage.interfaces import HandleRecord, NewMessage, StoredManifest
from kezchat.storage.outbox import OutboundMessage
from kezchat.testing.pgsupport import fresh_database
from kezchat.tools.migrate import KINDS
from tests.relaysupport import inbox, send
from tests.support import http_client, json_of, register, registration, start_server, temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def admin(*argv: str) -> tuple[int, str]:
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "kezchat.tools.admin", *argv],
        env={**os.environ, "PYTHONPATH": ROOT},
        path=ROOT,
        reactor=reactor,
    )
    return code, (out + err).decode()


def sqlite_rows(path: str, table: str, columns: list[str]) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT {', '.join(columns)} FROM {table}"))
    finally:
        conn.close()


async def postgres_rows(url: str, table: str, columns: list[str]) -> list[tuple]:
    import asyncpg

    async def fetch() -> list[tuple]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM {table}")
        finally:
            await conn.close()
        return sorted(tuple(r) for r in rows)

    return await deferred_from_coroutine(fetch())


class MigrateTests(TestCase):
    timeout = 90

    async def filled_chat_db(self) -> tuple[str, dict[str, KeyPair]]:
        """
        A SQLite kezchat database with every kind of row, written by the
        real stores.
        """
        path = os.path.join(temp_dir(self), "kez-chat.db")
        storage = chat_storage(path, reactor)
        storage.db.startService()
        await storage.db.when_ready()
        keys = {name: KeyPair.generate() for name in ("alice", "bob", "carol")}
        # recent: the chat-server started on the copy sweeps expired ones
        now = time.time()
        for n, (name, key) in enumerate(keys.items()):
            # each with its key directory leaf, as the registry stores it
            leaf = canonical_json(registration(key, name))
            await storage.registry.add_handle(
                HandleRecord(name, "kez.lat", key.primary, 1e9 + n), leaf
            )
        for i in range(30):
            sender, recipient = [("alice", "bob"), ("bob", "carol"), ("carol", "bob")][i % 3]
            await storage.messages.add_message(NewMessage(
                f"{recipient}@kez.lat", f"{sender}@kez.lat", keys[sender].primary,
                f'{{"i":{i},"text":"ü\\u0000"}}', now - 100 + i / 7, f"k{i}" if i % 2 else None,
                f"h{i}",
            ))
        await storage.messages.delete_upto("bob@kez.lat", 5)
        await storage.manifests.put_manifest(
            StoredManifest(keys["alice"].primary, bytes(range(256)), "b3", 1.7e9)
        )
        for i in range(3):  # messages waiting for another server
            await storage.outbox.enqueue(OutboundMessage(
                "b.example", "alice@kez.lat", "bob@b.example", f'{{"i":{i}}}', now,
                f"q{i}" if i else None, f"h{i}" if i else None,
            ))
        await storage.db.stopService()
        return path, keys

    async def test_chat_database(self) -> None:
        source, keys = await self.filled_chat_db()
        target = await fresh_database(self)
        code, output = await admin("migrate", "--from", source, "--to", target)
        self.assertEqual(code, 0, output)
        self.assertIn("messages: 25 rows", output)
        for table, columns in KINDS["kezchat"][2].items():
            expected = sqlite_rows(source, table, columns)
            self.assertTrue(expected, table)
            self.assertEqual(await postgres_rows(target, table, columns), expected, table)

        # a second run refuses: the target is no longer empty
        code, output = await admin("migrate", "--from", source, "--to", target)
        self.assertEqual(code, 1)
        self.assertIn("already holds", output)

        # a chat-server on the copy carries on: seqs continue, keys still
        # deduplicate, lookups answer
        server = await start_server(
            self,
            replace(ChatConfig(listen=("tcp:0:interface=127.0.0.1",)), db=target,
                    register_limit=0, send_limit=0),
        )
        client = http_client(self)
        _, page = await inbox(client, server.url, keys["bob"], "bob")
        before = [m["seq"] for m in page["messages"]]
        self.assertEqual(before[0], 6)
        code, body = await send(client, server.url, keys["alice"], "alice", "bob", {"new": 1})
        self.assertEqual((code, body["seq"]), (201, before[-1] + 1))
        # k3 was used (hash "h3" copied with it) for another request
        code, body = await send(
            client, server.url, keys["alice"], "alice", "bob", {"x": 1}, idempotency_key="k3"
        )
        self.assertEqual((code, body["error"]["code"]), (409, "idempotency_conflict"))
        # a retry of a send made on the copy is answered from its first result
        first = await send(
            client, server.url, keys["alice"], "alice", "bob", {"x": 2}, idempotency_key="new"
        )
        again = await send(
            client, server.url, keys["alice"], "alice", "bob", {"x": 2}, idempotency_key="new"
        )
        self.assertEqual((first[0], again), (201, (200, first[1])))
        response = await client.get(f"{server.url}/v1/u/carol")
        self.assertEqual(response.code, 200)
        self.assertEqual((await json_of(response))["log_index"], 2)
        # the key directory carries on: same log key, the root of the copied
        # leaves, and the next registration appended after them
        head = await json_of(await client.get(f"{server.url}/v1/log/head"))
        leaves = [row[0] for row in sqlite_rows(source, "log_leaves", ["leaf"])]
        seed = sqlite_rows(source, "settings", ["value"])
        self.assertEqual(head["size"], 3)
        tree = MemoryTree()
        for row in sorted(sqlite_rows(source, "log_leaves", ["idx", "leaf"])):
            tree.append(bytes(row[1]))
        self.assertEqual(head["root"], tree.root().hex())
        self.assertIn(
            head["key"].removeprefix("ed25519:"),
            [bytes(SigningKey(bytes.fromhex(v[0])).verify_key).hex() for v in seed
             if len(v[0]) == 64],
        )
        self.assertEqual(len(leaves), 3)
        _, record = await register(client, server.url, "dave")
        self.assertEqual(record["log_index"], 3)
        # the federation queue carries on after the copied entries
        queued = await server.parts.outbound._store.enqueue(OutboundMessage(
            "b.example", "alice@kez.lat", "bob@b.example", "{}", time.time()
        ))
        self.assertEqual(queued.id, 4)

    async def test_sig_database(self) -> None:
        source = os.path.join(temp_dir(self), "kez-sig.db")
        db, store = sigchain_storage(source, reactor)
        db.startService()
        for seq in (1, 2, 3):
            await store.append("ed25519:" + "1" * 64, EventRow(seq, "add", None, f"h{seq}"),
                               f'{{"seq":{seq}}}', 1.7e9, lambda stored: True)
        await db.stopService()
        target = await fresh_database(self)
        code, output = await admin("migrate", "--from", source, "--to", target)
        self.assertEqual(code, 0, output)
        columns = KINDS["kezsig"][2]["events"]
        self.assertEqual(
            await postgres_rows(target, "events", columns), sqlite_rows(source, "events", columns)
        )

    async def test_refusals(self) -> None:
        target = await fresh_database(self)
        code, output = await admin("migrate", "--from", "/nonexistent.db", "--to", target)
        self.assertEqual(code, 2)
        self.assertIn("is not a file", output)
        junk = os.path.join(temp_dir(self), "junk.db")
        sqlite3.connect(junk).execute("CREATE TABLE t (x)").connection.close()
        code, output = await admin("migrate", "--from", junk, "--to", target)
        self.assertEqual(code, 1)
        self.assertIn("neither a kezchat nor a kezsig database", output)
        code, output = await admin("migrate", "--from", junk, "--to", "/tmp/x.db")
        self.assertEqual(code, 2)
