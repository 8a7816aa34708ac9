"""
examples/bot.py, the plain-Python example client: run as a real process
against a real server (register, receive over SSE, resume after a restart,
decrypt, answer), its envelopes checked with L{kezchat.e2e} both ways, and
its imports limited to what it promises.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kezchat.e2e import open_envelope, seal_envelope, text_message
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.protocol.auth import body_digest, sign_request
from kezchat.timeutil import parse_rfc3339
from tests.hostilerelay import HostileRelay, Replayer, item, relabel, seal_raw
from tests.relaysupport import send as relay_send
from tests.support import http_client, json_of, register, start_server, temp_dir

BOT = Path(__file__).resolve().parent.parent / "examples" / "bot.py"


def load_bot() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kez_example_bot", BOT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BotProcess(ProcessProtocol):
    """
    The bot as a child process: its stdout as JSON lines, each awaitable.
    """

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self._buffer = b""
        self._waiting: list[tuple[int, Deferred[None]]] = []
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.lines.append(json.loads(line))
        for count, d in list(self._waiting):
            if len(self.lines) >= count:
                self._waiting.remove((count, d))
                d.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        for _, d in self._waiting:
            d.errback(AssertionError(f"the bot ended early: {self.stderr.decode()[-2000:]}"))
        self._waiting = []
        self.ended.callback(reason.value.exitCode)

    def wait_lines(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.lines) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d.addTimeout(30, reactor)


class BotRunTests(TestCase):
    timeout = 90

    def start_bot(self, url: str, state: str, count: int) -> BotProcess:
        bot = BotProcess()
        transport = reactor.spawnProcess(
            bot,
            sys.executable,
            [sys.executable, str(BOT), "--server-url", url, "--handle", "echobot",
             "--state", state, "--count", str(count), "--json"],
            env=dict(os.environ),
        )

        def stop() -> Deferred[int] | None:
            if not bot.ended.called:
                transport.signalProcess("KILL")
            return bot.ended

        self.addCleanup(stop)
        return bot

    async def test_register_listen_resume_answer(self) -> None:
        server = await start_server(self)
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        state = os.path.join(temp_dir(self), "echobot.json")

        async def send(envelope: dict) -> int:
            body = canonical_json({"to": "echobot", "envelope": envelope})
            now = int(reactor.seconds())
            auth = sign_request(alice, "POST", "/v1/messages", [body_digest(body)], now)
            response = await client.post(
                f"{server.url}/v1/messages", data=body,
                headers={"X-KEZ-Sender": "alice", "X-KEZ-Auth": auth},
            )
            self.assertEqual(response.code, 201, await response.text())
            return (await json_of(response))["seq"]

        # first run: registers, then handles one message live
        bot = self.start_bot(server.url, state, 1)
        await bot.wait_lines(1)
        ready = bot.lines[0]
        self.assertEqual(ready["ready"], "echobot@kez.lat")
        bot_primary = ready["primary"]
        await send(seal_envelope(alice, bot_primary, text_message("one")))
        self.assertEqual(await bot.ended, 0)
        first = dict(bot.lines[1])
        self.assertLessEqual(parse_rfc3339(first.pop("ts")), time.time() + 1)
        self.assertEqual(
            first,
            {"seq": 1, "from": "alice@kez.lat", "verified": True, "type": "text", "text": "one"},
        )

        # while it is down: a message, a forged one (signed by another key
        # than the sender's), another message
        await send(seal_envelope(alice, bot_primary, text_message("two")))
        await send(seal_envelope(KeyPair.generate(), bot_primary, text_message("x")))
        await send(seal_envelope(alice, bot_primary, text_message("three")))

        # second run: the same key (from its state file), resumes after what
        # it saw (its inbox's seq 2 is the server's copy of its first echo,
        # which it skips)
        bot = self.start_bot(server.url, state, 3)
        self.assertEqual(await bot.ended, 0, bot.stderr.decode())
        self.assertEqual(bot.lines[0]["primary"], bot_primary)
        received = bot.lines[1:]
        self.assertEqual([line["seq"] for line in received], [3, 4, 5])
        self.assertEqual([line["verified"] for line in received], [True, False, True])
        self.assertEqual(received[1]["type"], "unreadable")
        self.assertIn("not the key the server vouched for", received[1]["error"])

        # alice's inbox holds the answers, which the package opens
        auth = sign_request(alice, "GET", "/v1/inbox/alice", ["since=0"], int(reactor.seconds()))
        response = await client.get(f"{server.url}/v1/inbox/alice", headers={"X-KEZ-Auth": auth})
        items = [m for m in (await json_of(response))["messages"] if m["direction"] == "in"]
        plaintexts = [
            open_envelope(item["envelope"], alice, expected_sender=bot_primary).plaintext
            for item in items
        ]
        self.assertEqual(
            [p["text"] for p in plaintexts], ["echo: one", "echo: two", "echo: three"]
        )
        self.assertEqual({item["from"] for item in items}, {"echobot@kez.lat"})
        # each answer carries the key directory head the bot verified
        head = await json_of(await client.get(f"{server.url}/v1/log/head"))
        self.assertEqual(plaintexts[-1]["head"], {"size": head["size"], "root": head["root"]})


    async def test_through_a_hostile_relay(self) -> None:
        """
        Through a relay that relabels, replays and injects, the bot shows
        every attack as refused (with the reason) or not at all, answers
        only genuine messages, and names senders by their pinned keys.
        """
        server = await start_server(self)
        relay = await HostileRelay.start(self, server.url)
        client = http_client(self)
        alice, _ = await register(client, server.url, "alice")
        mallory, _ = await register(client, server.url, "mallory")
        state = os.path.join(temp_dir(self), "echobot.json")
        bot = self.start_bot(relay.url, state, 6)
        await bot.wait_lines(1)
        bot_primary = bot.lines[0]["primary"]

        async def send(key: KeyPair, name: str, envelope: dict) -> int:
            code, body = await relay_send(client, server.url, key, name, "echobot", envelope)
            self.assertEqual(code, 201, body)
            return int(body["seq"])

        def sig_of(i: dict) -> Any:
            envelope = i.get("envelope")
            return envelope.get("sig") if isinstance(envelope, dict) else None

        def only(envelope: dict, rewrite: Any) -> Any:
            # by envelope, not by seq: the bot's inbox also holds the
            # sender's copies of its echoes, interleaved as they are sent
            return lambda i: rewrite(i) if sig_of(i) == envelope["sig"] else [i]

        first = seal_envelope(alice, bot_primary, text_message("one"))
        mine = seal_envelope(mallory, bot_primary, text_message("I am alice"))
        other = seal_envelope(mallory, bot_primary, text_message("x"))
        second = seal_envelope(alice, bot_primary, text_message("two"))
        dressed = seal_envelope(mallory, bot_primary, text_message("echo: hidden"))
        relay.rewriters += [
            only(mine, relabel("alice@kez.lat")),
            only(other, relabel("alice@kez.lat\u200b")),
            # after "two", the first item the relay passed ("one") again
            Replayer(lambda i: sig_of(i) == second["sig"]),
            # mallory's message dressed up as the bot's own sent copy
            lambda i: [i, {
                **item(dressed, i["seq"] + 500, "echobot@kez.lat", bot_primary),
                "direction": "out", "to": "alice@kez.lat", "to_primary": alice.primary,
            }] if sig_of(i) == other["sig"] else [i],
        ]
        one = await send(alice, "alice", first)
        await bot.wait_lines(2)
        relabelled = await send(mallory, "mallory", mine)
        spaced = await send(mallory, "mallory", other)
        two = await send(alice, "alice", second)
        twice = seal_raw(mallory, bot_primary, b'{"type":"text","text":"a","text":"b"}')
        doubled = await send(mallory, "mallory", twice)
        three = await send(alice, "alice", seal_envelope(alice, bot_primary, text_message("three")))
        self.assertEqual(await bot.ended, 0, bot.stderr.decode())
        lines = {line["seq"]: line for line in bot.lines[1:]}
        self.assertEqual(sorted(lines), [one, relabelled, spaced, two, doubled, three])
        for seq in (relabelled, spaced, doubled):
            self.assertFalse(lines[seq]["verified"], lines[seq])
            self.assertTrue(lines[seq]["error"], lines[seq])
            self.assertNotEqual(lines[seq]["from"], "alice@kez.lat")
        self.assertIn("key changed", lines[relabelled]["error"])
        self.assertIn("not a handle", lines[spaced]["error"])
        self.assertIn("repeated", lines[doubled]["error"])
        for seq, text in ((one, "one"), (two, "two"), (three, "three")):
            self.assertEqual(
                (lines[seq]["from"], lines[seq]["verified"], lines[seq]["text"]),
                ("alice@kez.lat", True, text),
            )
        self.assertIn(b"replay", bot.stderr)
        self.assertIn(b"not from our key", bot.stderr)
        # answered: the genuine three only
        auth = sign_request(alice, "GET", "/v1/inbox/alice", ["since=0"], int(reactor.seconds()))
        response = await client.get(f"{server.url}/v1/inbox/alice", headers={"X-KEZ-Auth": auth})
        answers = [m for m in (await json_of(response))["messages"] if m["direction"] == "in"]
        self.assertEqual(len(answers), 3)
        with open(state) as f:
            self.assertEqual(json.load(f)["pins"], {"alice@kez.lat": alice.primary})


class BotCodeTests(SynchronousTestCase):
    def test_imports(self) -> None:
        """
        The example needs only PyNaCl, cryptography, rfc8785 and the
        standard library: nothing from kezchat.
        """
        allowed = {"nacl", "cryptography", "rfc8785"}
        tree = ast.parse(BOT.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                self.assertTrue(
                    top in allowed or top in sys.stdlib_module_names or top == "__future__", name
                )

    def test_envelopes_match_the_package(self) -> None:
        """
        The bot seals byte for byte what kezchat.e2e seals, and each opens
        the other's envelopes.
        """
        bot = load_bot()
        alice, bob = KeyPair(bytes(range(32))), KeyPair(bytes(range(32, 64)))
        plaintext = {"type": "text", "text": "héllo 😀", "n": 1}
        salt, ts = bytes(range(16)), "2026-05-25T03:00:00Z"
        ours = seal_envelope(alice, bob.primary, plaintext, ts=ts, salt=salt)
        theirs = bot.seal(bot.Identity(alice.seed), bob.primary, plaintext, ts=ts, salt=salt)
        self.assertEqual(theirs, ours)
        self.assertEqual(bot.open_envelope(bot.Identity(bob.seed), ours), plaintext)
        fresh = bot.seal(bot.Identity(alice.seed), bob.primary, plaintext)
        opened = open_envelope(fresh, bob, expected_sender=alice.primary)
        self.assertEqual(opened.plaintext, plaintext)
        tampered = dict(ours, ts="2026-05-25T03:00:01Z")
        with self.assertRaises(bot.EnvelopeError):
            bot.open_envelope(bot.Identity(bob.seed), tampered)

    def test_request_signatures_match_the_package(self) -> None:
        bot = load_bot()
        key = KeyPair(bytes(range(32)))
        client = bot.Client("http://unused", bot.Identity(key.seed), "alice", "kez.test")
        value = client.auth("GET", "/v1/inbox/alice", "since=0")
        ts = int(value.split(":")[0])
        self.assertEqual(
            value, sign_request(key, "GET", "/v1/inbox/alice", ["since=0"], ts, "kez.test")
        )
