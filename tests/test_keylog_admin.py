"""
C{kezchat-admin log verify} on SQLite and PostgreSQL, on a sound log and on
logs tampered with in the database; and the log key carried by
C{kezchat-admin backup}.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.trial.unittest import TestCase

from kezchat.compat.aio import deferred_from_coroutine
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from tests.backends import on_postgresql
from tests.support import http_client, json_of, register, registration, start_server, temp_dir
from tests.test_migrate import admin


class LogVerifyTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.db = self.server.service.config.db
        http = http_client(self)
        for name in ("alice", "bob", "carol", "dave", "erin"):
            await register(http, self.server.url, name)
        self.head = await json_of(await http.get(f"{self.server.url}/v1/log/head"))
        await self.server.service.stopService()

    async def verify(self) -> tuple[int, dict[str, Any]]:
        code, output = await admin("log", "verify", "--db", self.db, "--json")
        return code, json.loads(output.strip().splitlines()[-1])

    async def sql(self, statement: str, *args: Any) -> None:
        if self.db.startswith("postgresql://"):
            import asyncpg

            from kezchat.storage.dburl import pool_settings

            async def run() -> None:
                conn = await asyncpg.connect(pool_settings(self.db)[0])
                try:
                    await conn.execute(statement.replace("?", "$1", 1).replace("?", "$2", 1),
                                       *args)
                finally:
                    await conn.close()

            await deferred_from_coroutine(run())
        else:
            import sqlite3

            conn = sqlite3.connect(self.db)
            with conn:
                conn.execute(statement, args)
            conn.close()

    async def test_sound_log(self) -> None:
        code, verdict = await self.verify()
        self.assertEqual(code, 0, verdict)
        self.assertEqual(
            (verdict["ok"], verdict["size"], verdict["handles"], verdict["root"], verdict["key"]),
            (True, 5, 5, self.head["root"], self.head["key"]),
        )
        code, output = await admin("log", "verify", "--db", self.db)
        self.assertEqual(code, 0, output)
        self.assertIn("OK: 5 leaves, 5 handles", output)

    async def test_rewritten_leaf(self) -> None:
        forged = canonical_json(registration(KeyPair.generate(), "bob"))
        await self.sql("UPDATE log_leaves SET leaf = ? WHERE idx = ?", forged, 1)
        code, verdict = await self.verify()
        self.assertEqual(code, 1, verdict)
        text = " ".join(verdict["problems"])
        self.assertIn("stored node (0, 1) is not the hash of its leaves", text)
        self.assertIn("bob@kez.lat is bound to", text)

    async def test_missing_subtrees(self) -> None:
        """
        Stored subtree hashes gone (proofs could no longer be built): the
        count and the root say so.
        """
        await self.sql("DELETE FROM log_nodes WHERE level >= ?", 1)
        code, verdict = await self.verify()
        self.assertEqual(code, 1, verdict)
        self.assertIn("5 subtree hashes are stored, the leaves make 8", verdict["problems"])
        self.assertIn("the stored subtrees cannot give the root", verdict["problems"])

    async def test_bad_signature_in_a_leaf(self) -> None:
        body = registration(KeyPair.generate(), "mallory")
        body["payload"]["handle"] = "erin"
        await self.sql("UPDATE log_leaves SET leaf = ? WHERE idx = ?", canonical_json(body), 4)
        code, verdict = await self.verify()
        self.assertEqual(code, 1)
        self.assertIn("leaf 4: the leaf's signature does not verify under its primary",
                      verdict["problems"])

    async def test_handle_twice(self) -> None:
        leaf = canonical_json(registration(KeyPair.generate(), "alice"))
        await self.sql("UPDATE log_leaves SET leaf = ? WHERE idx = ?", leaf, 3)
        code, verdict = await self.verify()
        self.assertEqual(code, 1)
        self.assertIn("leaf 3: alice@kez.lat was already registered at leaf 0",
                      verdict["problems"])

    async def test_not_a_database(self) -> None:
        path = os.path.join(temp_dir(self), "nothing.db")
        code, output = await admin("log", "verify", "--db", path)
        self.assertEqual(code, 1)
        self.assertIn("is not a file", output)


on_postgresql(globals(), LogVerifyTests)


class BackupTests(TestCase):
    timeout = 60

    async def test_backup_carries_the_log_key(self) -> None:
        server = await start_server(self)
        http = http_client(self)
        await register(http, server.url, "alice")
        head = await json_of(await http.get(f"{server.url}/v1/log/head"))
        copy = os.path.join(temp_dir(self), "copy.db")
        code, output = await admin("backup", "--db", server.service.config.db, "--out", copy)
        self.assertEqual(code, 0, output)
        restored = await start_server(self, db=copy)
        again = await json_of(await http.get(f"{restored.url}/v1/log/head"))
        self.assertEqual((again["key"], again["root"], again["size"]),
                         (head["key"], head["root"], 1))
        code, output = await admin("log", "verify", "--db", copy)
        self.assertEqual(code, 0, output)
