"""
C{kezchat-admin backup}: a copy of a live database taken while a real
server process keeps writing it is a consistent snapshot, and a server
restored from it serves exactly what the copy holds.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.sigchain import bodies, next_event
from kezchat.tools.admin import main
from tests.deploysupport import ROOT, SERVER_ARGS, free_port, spawn, twistd, wait_healthy
from tests.support import deferred_sleep, http_client, json_of, register, temp_dir


def rows(path: str, table: str, order: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
    finally:
        conn.close()


def pragma(path: str, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def admin_backup(*argv: str) -> tuple[int, bytes, str]:
    out, err, code = await getProcessOutputAndValue(
        sys.executable, ["-m", "kezchat.tools.admin", "backup", *argv],
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    return code, out, err.decode()


class ServerBackupTests(TestCase):
    timeout = 90

    async def _start(self, plugin: str, db: str) -> str:
        port = free_port()
        prefix = "KEZ_CHAT" if plugin == "kezchat" else "KEZ_SIG"
        env = {
            **os.environ,
            "PYTHONPATH": ROOT,
            f"{prefix}_DB": db,
            f"{prefix}_LISTEN": f"tcp:{port}:interface=127.0.0.1",
            "KEZ_CHAT_SEND_LIMIT": "0",
            "KEZ_CHAT_REGISTER_LIMIT": "0",
        }
        process = spawn(self, [twistd(), *SERVER_ARGS, plugin], env, os.path.dirname(db))
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(self, process, url)
        self._process = process
        return url

    async def test_chat_database_under_load(self) -> None:
        scratch = temp_dir(self)
        live, backup = os.path.join(scratch, "live.db"), os.path.join(scratch, "backup.db")
        url = await self._start("kezchat", live)
        server = self._process
        client = http_client(self)
        alice, _ = await register(client, url, "alice")
        bob, _ = await register(client, url, "bob")

        acked: list[int] = []
        sending = [True]

        async def sender(name: str) -> None:
            n = 0
            while sending[0]:
                body = json.dumps({"to": "bob", "envelope": {"v": 1, "n": f"{name}-{n}"}}).encode()
                auth = sign_request(
                    alice, "POST", "/v1/messages", [body_digest(body)], int(time.time())
                )
                response = await client.post(
                    f"{url}/v1/messages", data=body,
                    headers={"X-KEZ-Sender": ["alice"], "X-KEZ-Auth": [auth],
                             "Content-Type": ["application/json"]},
                )
                self.assertEqual(response.code, 201, await response.text())
                acked.append((await json_of(response))["seq"])
                n += 1

        senders = [Deferred.fromCoroutine(sender(f"s{k}")) for k in range(4)]

        async def until_acked(count: int) -> None:
            # a sender that stopped has failed: gatherResults below says why
            while len(acked) < count and not any(d.called for d in senders):
                await deferred_sleep(0.02)

        try:
            await until_acked(40)
            acked_before = list(acked)
            code, _out, err = await admin_backup("--db", live, "--out", backup)
            await until_acked(len(acked) + 20)
        finally:
            sending[0] = False
            await gatherResults(senders)
        self.assertEqual(code, 0, err)
        self.assertIn("backed up", err)
        self.assertIn("schema version", err)

        # one self-contained, sound file
        self.assertEqual(pragma(backup, "journal_mode"), "delete")
        self.assertEqual(pragma(backup, "integrity_check"), "ok")
        self.assertFalse(os.path.exists(backup + "-wal"))
        self.assertEqual(os.stat(backup).st_mode & 0o777, 0o600)

        # a snapshot of one commit: seqs 1..n without a hole, the counter
        # agreeing with them, and everything acknowledged before it began
        # (bob's inbox; alice's holds her sender's copies, one per message,
        # stored in the same transactions)
        copies = [r for r in rows(backup, "messages", "recipient, seq") if r[0] == "alice@kez.lat"]
        messages = [r for r in rows(backup, "messages", "recipient, seq") if r[0] == "bob@kez.lat"]
        seqs = [row[1] for row in messages]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertEqual(len(copies), len(seqs))
        self.assertEqual(
            [r[1] for r in rows(backup, "inbox_counters", "recipient")], [len(seqs), len(seqs)]
        )
        self.assertLessEqual(set(acked_before), set(seqs))
        self.assertGreater(len(acked), len(seqs), "the server kept writing after the backup")

        await server.stop()
        # every row of the copy is the live database's row
        live_messages = [
            r for r in rows(live, "messages", "recipient, seq") if r[0] == "bob@kez.lat"
        ]
        self.assertEqual(len(live_messages), len(acked))
        self.assertEqual(messages, live_messages[: len(messages)])
        self.assertEqual(rows(backup, "handles", "fqhn"), rows(live, "handles", "fqhn"))
        self.assertEqual(rows(backup, "schema_version", "version"),
                         rows(live, "schema_version", "version"))

        # restored: a server on the copy serves exactly its rows, and goes on
        restored = os.path.join(temp_dir(self), "kez-chat.db")
        shutil.copy(backup, restored)
        url = await self._start("kezchat", restored)
        served, since = [], 0
        while True:
            auth = sign_request(bob, "GET", "/v1/inbox/bob", [f"since={since}"], int(time.time()))
            response = await client.get(
                f"{url}/v1/inbox/bob?since={since}&limit=500", headers={"X-KEZ-Auth": [auth]}
            )
            page = await json_of(response)
            self.assertEqual(response.code, 200, page)
            if not page["messages"]:
                break
            served.extend(page["messages"])
            since = page["next"]
        self.assertEqual([m["seq"] for m in served], seqs)
        self.assertEqual(
            [m["envelope"] for m in served], [json.loads(row[4]) for row in messages]
        )
        response = await client.get(f"{url}/v1/u/alice")
        self.assertEqual((await json_of(response))["primary"], alice.primary)

    async def test_sig_database_to_stdout(self) -> None:
        """
        The sig-server's database backs up the same way; C{--out -} streams
        the copy (a backup taken inside a container, saved outside it).
        """
        scratch = temp_dir(self)
        live = os.path.join(scratch, "kez-sig.db")
        url = await self._start("kezsig", live)
        client = http_client(self)
        key = KeyPair.generate()
        chain: list[dict] = []
        for n in range(3):
            event = next_event(
                key, chain, "add_endpoint",
                bodies.add_endpoint(f"e{n}", "https", url=f"https://example.org/{n}"),
            )
            response = await client.post(
                f"{url}/v1/sigchains/ed25519/{key.public_hex}/events",
                data=canonical_json(event),
                headers={"Content-Type": ["application/json"]},
            )
            self.assertEqual(response.code, 201, await response.text())
            chain.append(event)

        code, out, err = await admin_backup("--db", live, "--out", "-")
        self.assertEqual(code, 0, err)
        self.assertEqual(out[:16], b"SQLite format 3\x00")
        backup = os.path.join(scratch, "copy.db")
        with open(backup, "wb") as f:
            f.write(out)
        events = rows(backup, "events", "seq")
        self.assertEqual([json.loads(row[5]) for row in events], chain)
        await self._process.stop()
        self.assertEqual(events, rows(live, "events", "seq"))


class BackupCommandTests(TestCase):
    def run_admin(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["backup", *argv])
        return code, out.getvalue(), err.getvalue()

    def _database(self) -> str:
        path = os.path.join(temp_dir(self), "kez-chat.db")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.close()
        return path

    def test_never_overwrites(self) -> None:
        source = self._database()
        target = os.path.join(temp_dir(self), "backup.db")
        with open(target, "w") as f:
            f.write("older backup")
        code, _, err = self.run_admin("--db", source, "--out", target)
        self.assertEqual(code, 1)
        self.assertIn("already exists", err)
        with open(target) as f:
            self.assertEqual(f.read(), "older backup")

    def test_missing_database_creates_nothing(self) -> None:
        scratch = temp_dir(self)
        missing, target = os.path.join(scratch, "typo.db"), os.path.join(scratch, "b.db")
        code, _, err = self.run_admin("--db", missing, "--out", target)
        self.assertEqual(code, 1)
        self.assertIn("no such database", err)
        self.assertEqual(os.listdir(scratch), [])

    def test_not_a_database(self) -> None:
        scratch = temp_dir(self)
        junk = os.path.join(scratch, "junk.db")
        with open(junk, "wb") as f:
            f.write(os.urandom(4096))
        code, _, err = self.run_admin("--db", junk, "--out", os.path.join(scratch, "b.db"))
        self.assertEqual(code, 1, err)
        self.assertEqual(sorted(os.listdir(scratch)), ["junk.db"])

    def test_url_refused(self) -> None:
        code, _, err = self.run_admin(
            "--db", "postgresql://kez@127.0.0.1/kez", "--out", os.path.join(temp_dir(self), "b")
        )
        self.assertEqual(code, 1)
        self.assertIn("not a SQLite file", err)

    def test_options_required(self) -> None:
        self.assertEqual(self.run_admin("--db", "x.db")[0], 2)
        self.assertEqual(self.run_admin("--out", "x.db")[0], 2)

    def test_source_untouched_and_copy_complete(self) -> None:
        source = self._database()
        before = sorted(os.listdir(os.path.dirname(source)))
        target = os.path.join(temp_dir(self), "b.db")
        code, _, err = self.run_admin("--db", source, "--out", target)
        self.assertEqual(code, 0, err)
        self.assertIn("rows: t 1", err)
        self.assertEqual(sorted(os.listdir(os.path.dirname(source))), before)
        self.assertEqual(rows(target, "t", "x"), [(1,)])
        self.assertEqual(os.listdir(os.path.dirname(target)), ["b.db"])
