"""
Configuration and invariants: retention settings that make no sense are
refused at start-up; the retention byte cap counts UTF-8 bytes; error-code
checks are real exceptions (not C{assert}s that C{python -O} removes);
sigchains have a length cap and are verified off the reactor thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.identity.keys import KeyPair
from kezchat.manifests.errors import ManifestError
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.server.config import ChatConfig, ChatOptions
from kezchat.sigchain import bodies, next_event
from kezchat.sigchain.errors import ChainError
from kezchat.sigserver import sigchains as sigchains_module
from kezchat.sigserver.config import SigConfig, SigOptions
from kezchat.storage.sqlite.database import SQLiteDatabase
from tests.relaysupport import inbox
from tests.sigsupport import start_sig_server
from tests.support import http_client, json_of, register, start_server, temp_dir


class RetentionOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> ChatConfig:
        options = ChatOptions(environ={})
        options.parseOptions(list(argv))
        return options.config

    def test_nonsense_is_refused_with_one_line_naming_the_flag(self) -> None:
        for flag, value in [
            ("--retention-days", "-1"),
            ("--retention-days", "0"),
            ("--retention-days", "nan"),
            ("--retention-days", "NaN"),
            ("--retention-days", "inf"),
            ("--retention-days", "1e9"),
            ("--retention-bytes", "-5"),
            ("--retention-bytes", "0"),
            ("--retention-bytes", "1.5"),
            ("--retention-bytes", "nan"),
        ]:
            with self.assertRaises(UsageError, msg=f"{flag} {value}") as caught:
                self.parse(flag, value)
            message = str(caught.exception)
            self.assertIn(flag, message)
            self.assertNotIn("\n", message)

    @given(st.one_of(
        st.text(max_size=20),
        st.floats().map(repr),
        st.integers(min_value=-(10**20), max_value=10**20).map(str),
    ))
    @settings(max_examples=300, deadline=None)
    def test_whatever_is_accepted_holds_the_invariant(self, value: str) -> None:
        if value.startswith("-"):
            value = " " + value  # a value, not a flag
        for flag in ("--retention-days", "--retention-bytes"):
            try:
                config = self.parse(flag, value)
            except UsageError as e:
                self.assertIn(flag, str(e))
                continue
            self.assertTrue(0 < config.retention_days <= 36500)
            self.assertIsInstance(config.retention_bytes, int)
            self.assertGreater(config.retention_bytes, 0)

    def test_environment_is_checked_too(self) -> None:
        options = ChatOptions(environ={"KEZ_CHAT_RETENTION_DAYS": "nan"})
        self.assertRaises(UsageError, options.parseOptions, [])

    def test_sensible_values(self) -> None:
        config = self.parse("--retention-days", "0.5", "--retention-bytes", "1")
        self.assertEqual((config.retention_days, config.retention_bytes), (0.5, 1))

    def test_the_config_object_holds_the_invariant(self) -> None:
        for bad in ({"retention_days": float("nan")}, {"retention_days": 0},
                    {"retention_bytes": -1}, {"retention_bytes": 0}):
            self.assertRaises(ValueError, ChatConfig, **bad)

    def test_allow_server_change_flag(self) -> None:
        self.assertFalse(self.parse().allow_server_change)
        self.assertTrue(self.parse("--allow-server-change").allow_server_change)
        options = ChatOptions(environ={"KEZ_CHAT_ALLOW_SERVER_CHANGE": "yes"})
        options.parseOptions([])
        self.assertTrue(options.config.allow_server_change)


class ErrorCodeTests(SynchronousTestCase):
    """
    Unknown codes raise even under C{python -O}, which strips C{assert}.
    """

    def test_unknown_codes_raise_value_error(self) -> None:
        self.assertRaises(ValueError, ChainError, "no_such_code", "x")
        self.assertRaises(ValueError, ManifestError, "no_such_code", "x")

    def test_no_assert_in_the_package(self) -> None:
        import ast

        import kezchat

        root = os.path.dirname(kezchat.__file__)
        found = []
        for folder, _dirs, files in os.walk(root):
            if os.path.relpath(folder, root).split(os.sep)[0] == "testing":
                continue  # fixtures of the tests (kezchat.testing): test code
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                    found += [
                        f"{os.path.relpath(path, root)}:{node.lineno}"
                        for node in ast.walk(tree)
                        if isinstance(node, ast.Assert)
                    ]
        # the NATS bridge's one is a type narrowing, not an error check
        self.assertEqual([place.split(":")[0] for place in found], ["natsbridge/bridge.py"])


class RetentionBytesTests(TestCase):
    timeout = 30

    async def test_the_byte_cap_counts_utf8_bytes(self) -> None:
        server = await start_server(self)
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        bob, _ = await register(client, server.url, "bob")
        # 1,000 characters, 2,000 UTF-8 bytes each, sent as raw UTF-8 (the
        # server keeps the envelope's text as sent)
        for i in range(2):
            raw = json.dumps({"to": "bob", "envelope": {"i": i, "t": "é" * 1000}},
                             ensure_ascii=False).encode("utf-8")
            auth = sign_request(alice, "POST", "/v1/messages", [body_digest(raw)], int(time.time()))
            response = await client.post(f"{server.url}/v1/messages", data=raw, headers={
                "X-KEZ-Sender": "alice", "X-KEZ-Auth": auth, "Content-Type": "application/json",
            })
            self.assertEqual(response.code, 201, await response.content())
        # two messages: about 2,000 characters but 4,000 bytes; a 3,000 byte
        # cap keeps only the newest
        await server.parts.relay.apply_retention(max_age=3600, max_bytes=3000)
        _, page = await inbox(client, server.url, bob, "bob")
        self.assertEqual([m["envelope"]["i"] for m in page["messages"]], [1])
        text = (await (await client.get(f"{server.url}/metrics")).content()).decode()
        first = json.dumps({"i": 0, "t": "é" * 1000}, ensure_ascii=False)
        # bob's first message, and alice's own copy of it (her inbox holds
        # the same two envelopes, under the same cap)
        dropped = 2 * len(first.encode("utf-8"))
        self.assertIn(f'kezchat_retention_dropped_bytes_total{{reason="quota"}} {dropped}.0', text)

    async def test_sizes_stored_before_are_recounted(self) -> None:
        path = os.path.join(temp_dir(self), "chat.db")
        db = SQLiteDatabase(path, reactor)
        db.startService()
        await db.when_ready()
        await db.stopService()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(
            "INSERT INTO messages (recipient, seq, sender, sender_primary, envelope, size,"
            " created_at) VALUES ('bob', 1, 'alice', 'k', ?, 3, 0)", ('"éé"',)
        )
        # back to before 006: what came after it is undone too
        for column in ("direction", "to_fqhn", "to_primary", "undeliverable"):
            conn.execute(f"ALTER TABLE messages DROP COLUMN {column}")
        for table in ("log_leaves", "log_nodes", "federation_outbox", "federation_leases"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("DELETE FROM schema_version WHERE version >= 6")
        conn.close()
        db = SQLiteDatabase(path, reactor)
        db.startService()
        self.addCleanup(db.stopService)
        size = await db.read(lambda c: c.execute("SELECT size FROM messages").fetchone()[0])
        self.assertEqual(size, 6)


NATS = bodies.add_endpoint("nats-1", "nats", url="wss://kez.lat/nats")


class SigchainCapTests(TestCase):
    timeout = 30

    async def test_appends_past_the_cap_are_refused(self) -> None:
        server = await start_sig_server(self, max_chain_events=3)
        client = http_client(self)
        key = KeyPair.generate()
        url = server.chain_url(key.public_hex)
        events: list[dict] = []
        for i in range(3):
            event = next_event(key, events, "add_endpoint",
                               bodies.add_endpoint(f"n{i}", "nats", url="wss://kez.lat/nats"))
            response = await client.post(url + "/events", json=event)
            self.assertEqual(response.code, 201, await response.content())
            events.append(event)
        event = next_event(key, events, "add_endpoint", NATS)
        response = await client.post(url + "/events", json=event)
        body = await json_of(response)
        self.assertEqual((response.code, body["error"]["code"]), (409, "chain_too_long"))
        self.assertIn("3", body["error"]["message"])
        chain = await json_of(await client.get(url))
        self.assertEqual(len(chain["events"]), 3)

    async def test_verified_off_the_reactor_thread(self) -> None:
        seen: list[str] = []
        real = sigchains_module.check_signed

        def watched(primary: str, body: object) -> object:
            seen.append(threading.current_thread().name)
            return real(primary, body)

        self.patch(sigchains_module, "check_signed", watched)
        server = await start_sig_server(self)
        client = http_client(self)
        key = KeyPair.generate()
        event = next_event(key, [], "add_endpoint", NATS)
        response = await client.post(server.chain_url(key.public_hex) + "/events", json=event)
        self.assertEqual(response.code, 201)
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(seen[0], threading.current_thread().name)


class SigOptionsTests(SynchronousTestCase):
    def test_max_chain_events(self) -> None:
        def parse(argv: list[str], environ: dict[str, str] | None = None) -> SigConfig:
            options = SigOptions(environ=environ or {})
            options.parseOptions(argv)
            return options.config

        self.assertEqual(parse([]).max_chain_events, 10_000)
        self.assertEqual(parse(["--max-chain-events", "5"]).max_chain_events, 5)
        self.assertEqual(parse([], {"KEZ_SIG_MAX_CHAIN_EVENTS": "7"}).max_chain_events, 7)
        for bad in ("0", "-1", "many", "1.5"):
            self.assertRaises(UsageError, parse, ["--max-chain-events", bad])
