"""
Each attack a hostile server can make on the key directory, and the client
catching it.

The server is real (L{tests.support.start_server}); the attacker is a real
HTTP server in front of it (L{tests.hostilerelay}) that rewrites answers.
Where the attack needs a forged log, the attacker has what a compromised
server has: the log key (read from the server's database) and every leaf.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from argparse import Namespace
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from kezchat.cli.context import Context
from kezchat.cli.home import Home
from kezchat.cli.main import _complete
from kezchat.cli.messages import Reader
from kezchat.cli.output import Output
from kezchat.client.blocking import BlockingChatClient
from kezchat.client.http import ChatClient
from kezchat.client.keydir import DirectoryError, JsonHeadStore, KeyDirectory
from kezchat.e2e import open_envelope, seal_envelope, text_message
from kezchat.identity.jcs import canonical_json
from kezchat.identity.keys import KeyPair
from kezchat.keylog.merkle import MemoryTree
from kezchat.keylog.wire import b64url, sign_head
from tests.clisupport import Cli, CliTestCase, assert_one_line_error
from tests.hostilerelay import HostileRelay, json_tamper, start_hostile_relay
from tests.support import http_client, register, registration, start_server, temp_dir
from tests.test_example_bot import load_bot

TS = "2026-05-25T03:00:00Z"


class ForgedLog:
    """
    A log the attacker builds: the genuine leaves with some rewritten or
    added, signed with the genuine log key.
    """

    def __init__(self, seed: bytes, leaves: list[bytes]) -> None:
        self.seed = seed
        self.leaves = leaves
        self.tree = MemoryTree()
        for leaf in leaves:
            self.tree.append(leaf)
        self.index = {
            json.loads(leaf)["payload"]["handle"]: i for i, leaf in enumerate(leaves)
        }

    def head(self, size: int | None = None) -> dict[str, Any]:
        size = self.tree.size if size is None else size
        return sign_head(self.seed, size, self.tree.root(size), TS).json()

    def answer(self, path: str, query: dict[str, list[str]], value: Any) -> Any:
        """
        What the hostile server says instead (always a 200), for the log's
        routes and the records of the handles it rewrote.
        """
        forged = self._forge(path, query, value)
        return None if forged is None else (200, forged)

    def _forge(self, path: str, query: dict[str, list[str]], value: Any) -> Any:
        if path == "/v1/log/head":
            return self.head()
        if path == "/v1/log/inclusion":
            handle = query["handle"][0].partition("@")[0]
            index, size = self.index[handle], int(query["size"][0])
            return {"index": index, "size": size, "leaf": b64url(self.leaves[index]),
                    "path": [h.hex() for h in self.tree.inclusion(index, size)]}
        if path == "/v1/log/consistency":
            first, second = int(query["from"][0]), int(query["to"][0])
            return {"path": [h.hex() for h in self.tree.consistency(first, second)]}
        if path.startswith("/v1/u/"):
            handle = path.removeprefix("/v1/u/").partition("@")[0]
            payload = json.loads(self.leaves[self.index[handle]])["payload"]
            return {**value, "primary": payload["primary"], "log_index": self.index[handle]}
        return None


class AttackTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        http = http_client(self)
        self.keys: dict[str, KeyPair] = {}
        for name in ("alice", "bob", "mallory"):
            self.keys[name], _ = await register(http, self.server.url, name)
        self.relay: HostileRelay = await start_hostile_relay(self, self.server.url)
        self.honest = self.client(self.server.url)
        self.hostile = self.client(self.relay.url)
        self.home = temp_dir(self)

    def client(self, url: str) -> ChatClient:
        client = ChatClient(url, reactor)
        self.addCleanup(client.close)
        return client

    def directory(self, client: ChatClient, name: str = "keydir.json") -> KeyDirectory:
        return KeyDirectory("kez.lat", client, JsonHeadStore(Path(self.home) / name))

    def genuine(self) -> tuple[bytes, list[bytes]]:
        """
        What a compromised server holds: its log key and its leaves.
        """
        conn = sqlite3.connect(self.server.service.config.db)
        try:
            seed = conn.execute("SELECT value FROM settings WHERE name = 'log_key'").fetchone()
            leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        finally:
            conn.close()
        return bytes.fromhex(seed[0]), leaves

    async def assertRefused(self, code: str, keydir: KeyDirectory, handle: str) -> None:
        record = await keydir._source.lookup(handle)  # type: ignore[attr-defined]
        with self.assertRaises(DirectoryError) as caught:
            await keydir.vouch(record)
        self.assertEqual(caught.exception.code, code, caught.exception.message)

    async def test_honest_server_vouches(self) -> None:
        keydir = self.directory(self.hostile)
        for name in ("alice", "bob", "mallory"):
            record = await self.hostile.lookup(name)
            head = await keydir.vouch(record)
            self.assertEqual(head.size, 3)
        kept = keydir.kept()
        assert kept is not None
        self.assertEqual(kept.size, 3)

    async def test_substituted_key_not_in_the_log(self) -> None:
        """
        The server answers bob's lookup with a key of its own: no leaf
        registers it, so the client refuses, whether the record keeps
        bob's index, drops it, or points past the head.
        """
        attacker = KeyPair.generate().primary

        for change in ({"primary": attacker}, {"primary": attacker, "log_index": None},
                       {"primary": attacker, "log_index": 7}):
            def rule(path: str, query: Any, value: Any, change: dict = change) -> Any:
                if path == "/v1/u/bob":
                    return {k: v for k, v in {**value, **change}.items() if v is not None}
                return None

            self.relay.tamper = json_tamper(rule)
            code = "wrong_leaf" if "log_index" not in change else "not_included"
            await self.assertRefused(code, self.directory(self.hostile), "bob")

    async def test_substituted_key_under_another_handle(self) -> None:
        """
        The server answers bob's lookup with mallory's key, and proves the
        inclusion of mallory's genuine leaf: it is in the log, but as
        mallory's, so the client refuses it.
        """
        mallory = await self.honest.lookup("mallory")
        proof = await self.honest.log_inclusion("mallory", 3)

        def rule(path: str, query: Any, value: Any) -> Any:
            if path == "/v1/u/bob":
                return {**value, "primary": mallory["primary"], "log_index": mallory["log_index"]}
            if path == "/v1/log/inclusion" and query["handle"] == ["bob@kez.lat"]:
                return proof
            return None

        self.relay.tamper = json_tamper(rule)
        await self.assertRefused("wrong_leaf", self.directory(self.hostile), "bob")

        # bob's own leaf with mallory's key in the record: refused as well
        def keep_proof(path: str, query: Any, value: Any) -> Any:
            if path == "/v1/u/bob":
                return {**value, "primary": mallory["primary"]}
            return None

        self.relay.tamper = json_tamper(keep_proof)
        await self.assertRefused("wrong_leaf", self.directory(self.hostile), "bob")

    async def test_head_with_a_bad_signature(self) -> None:
        for field, forge in (("sig", lambda s: ("0" if s[0] != "0" else "1") + s[1:]),
                             ("root", lambda r: "00" * 32),
                             ("size", lambda n: n + 1)):
            def rule(path: str, query: Any, value: Any, field=field, forge=forge) -> Any:
                if path == "/v1/log/head":
                    return {**value, field: forge(value[field])}
                return None

            self.relay.tamper = json_tamper(rule)
            await self.assertRefused("bad_head", self.directory(self.hostile), "alice")

    async def test_log_key_that_changes(self) -> None:
        """
        After a client kept a head, a head signed (validly) by another key
        is refused: a new key could start a new history.
        """
        keydir = self.directory(self.hostile)
        await keydir.vouch(await self.hostile.lookup("alice"))
        other = os.urandom(32)

        def rule(path: str, query: Any, value: Any) -> Any:
            if path == "/v1/log/head":
                return sign_head(other, value["size"], bytes.fromhex(value["root"]),
                                 value["ts"]).json()
            return None

        self.relay.tamper = json_tamper(rule)
        await self.assertRefused("log_key_changed", keydir, "bob")

    async def test_rewritten_old_leaf(self) -> None:
        """
        The server rewrites bob's registration (to a key it holds) and
        grows the log: the new head does not extend the one the client
        kept, so every lookup under it is refused.
        """
        keydir = self.directory(self.hostile)
        await keydir.vouch(await self.hostile.lookup("alice"))
        seed, leaves = self.genuine()
        forged = list(leaves)
        forged[1] = canonical_json(registration(KeyPair.generate(), "bob"))
        forged.append(canonical_json(registration(KeyPair.generate(), "dave")))
        log = ForgedLog(seed, forged)
        self.relay.tamper = json_tamper(log.answer)
        await self.assertRefused("inconsistent", keydir, "bob")
        # the forgery is self-consistent: a client with no history would
        # believe it; the kept head is what catches it
        fresh = self.directory(self.hostile, "fresh.json")
        await fresh.vouch(await self.hostile.lookup("bob"))
        kept = keydir.kept()
        assert kept is not None
        self.assertEqual(kept.size, 3)

    async def test_two_heads_of_one_size(self) -> None:
        keydir = self.directory(self.hostile)
        await keydir.vouch(await self.hostile.lookup("alice"))
        seed, leaves = self.genuine()
        forged = list(leaves)
        forged[1] = canonical_json(registration(KeyPair.generate(), "bob"))
        self.relay.tamper = json_tamper(ForgedLog(seed, forged).answer)
        await self.assertRefused("split_view", keydir, "bob")

    async def test_split_view_seen_through_gossip(self) -> None:
        """
        The server shows alice the genuine directory and carol one where
        bob's key is its own. Each client's checks pass on its own; as soon
        as either sees the other's head (carried in a message), it warns.
        """
        seed, leaves = self.genuine()
        forged = list(leaves)
        forged[1] = canonical_json(registration(KeyPair.generate(), "bob"))
        self.relay.tamper = json_tamper(ForgedLog(seed, forged).answer)
        alice = self.directory(self.honest, "alice.json")
        carol = self.directory(self.hostile, "carol.json")
        await alice.vouch(await self.honest.lookup("bob"))
        await carol.vouch(await self.hostile.lookup("bob"))
        alice_head, carol_head = alice.kept(), carol.kept()
        assert alice_head is not None and carol_head is not None
        for keydir, peer in ((alice, carol_head), (carol, alice_head)):
            with self.assertRaises(DirectoryError) as caught:
                await keydir.compare_gossip(peer.brief())
            self.assertEqual(caught.exception.code, "split_view")
        # a peer's older head that the log extends is no warning
        await alice.compare_gossip({"size": 1, "root": leaf_root(leaves[:1])})
        # and neither is the same head
        await alice.compare_gossip(alice_head.brief())

    async def test_split_view_at_different_sizes(self) -> None:
        """
        The server shows carol a forged log of 4 leaves; alice (genuine, 3)
        gets carol's head: her server cannot prove that size 4 extends her
        3 (it has no size 4), and once it grows, its size-4 root differs.
        """
        seed, leaves = self.genuine()
        forged = list(leaves)
        forged[0] = canonical_json(registration(KeyPair.generate(), "alice"))
        forged.append(canonical_json(registration(KeyPair.generate(), "zed")))
        self.relay.tamper = json_tamper(ForgedLog(seed, forged).answer)
        alice = self.directory(self.honest, "alice.json")
        carol = self.directory(self.hostile, "carol.json")
        await alice.vouch(await self.honest.lookup("bob"))
        await carol.vouch(await self.hostile.lookup("bob"))
        carol_head = carol.kept()
        assert carol_head is not None
        # carol is ahead: alice's server shows no size 4 yet, nothing to say
        await alice.compare_gossip(carol_head.brief())
        await register(http_client(self), self.server.url, "yan")
        with self.assertRaises(DirectoryError) as caught:
            await alice.compare_gossip(carol_head.brief())
        self.assertEqual(caught.exception.code, "split_view")
        # and carol, given alice's smaller head, finds it is not a prefix
        alice_head = alice.kept()
        assert alice_head is not None
        with self.assertRaises(DirectoryError) as caught:
            await carol.compare_gossip({"size": 3, "root": leaf_root(leaves)})
        self.assertEqual(caught.exception.code, "split_view")


def leaf_root(leaves: list[bytes]) -> str:
    tree = MemoryTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root().hex()


class _Threaded:
    """
    L{BlockingChatClient} for a test on the reactor: each call's exchange
    runs in a thread (it blocks; the server runs on this reactor), its
    answer awaited here. What L{KeyDirectory} receives is the blocking
    client's own.
    """

    def __init__(self, url: str) -> None:
        self.client = BlockingChatClient(url, timeout=20)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any) -> Any:
            return await deferToThread(lambda: _complete(method(*args)))

        return call


class BlockingClientAttackTests(AttackTests):
    """
    Every attack above, the log read through the blocking client that
    C{kez-chat send} uses without a reactor: the same L{KeyDirectory}
    checks catch each.
    """

    def client(self, url: str) -> Any:
        return _Threaded(url)


class CliKeyDirectoryTests(CliTestCase):
    """
    C{kez-chat add} and C{send} refuse a key the directory does not vouch
    for; C{kez-chat audit} replays the log.
    """

    async def test_add_refuses_a_substituted_key(self) -> None:
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        relay = await start_hostile_relay(self, self.chat.url)
        attacker = KeyPair.generate().primary

        def rule(path: str, query: Any, value: Any) -> Any:
            if path.startswith("/v1/u/bob"):
                return {**value, "primary": attacker}
            return None

        relay.tamper = json_tamper(rule)
        via = {"KEZ_CHAT_SERVER_URL": relay.url}
        result = await alice.run("add", "bob", "--json", env=via)
        assert_one_line_error(self, result, 1, "KEY DIRECTORY CHECK FAILED", "wrong_leaf")
        result = await alice.run("send", "bob", "hi", env=via)
        assert_one_line_error(self, result, 1, "KEY DIRECTORY CHECK FAILED")
        # nothing was pinned; the honest server's answer is accepted
        added = await alice.ok("add", "bob", "--json")
        self.assertEqual(added.json["primary"], bob.account["primary"])

    async def test_send_checks_the_directory_without_a_reactor(self) -> None:
        """
        C{send} to someone not pinned yet (run without a reactor, over the
        blocking client) checks the key directory as C{add} does: a forged
        head, then a rewritten history, are refused and pin nothing; an
        honest directory's head is kept in the home and goes into the text.
        """
        await self.start_servers()
        [alice] = await self.registered("alice")
        http = http_client(self)
        bob, _ = await register(http, self.chat.url, "bob")
        await register(http, self.chat.url, "carol")
        relay = await start_hostile_relay(self, self.chat.url)
        via = {"KEZ_CHAT_SERVER_URL": relay.url}

        def forged_root(path: str, query: Any, value: Any) -> Any:
            if path == "/v1/log/head":
                return {**value, "root": "00" * 32}
            return None

        relay.tamper = json_tamper(forged_root)
        result = await alice.run("send", "bob", "hi", env=via)
        assert_one_line_error(self, result, 1, "KEY DIRECTORY CHECK FAILED", "bad_head")
        self.assertEqual((await alice.ok("contacts", "--json")).lines, [])

        relay.tamper = None
        await alice.ok("send", "bob", "hi", env=via)
        head = json.loads(await (await http.get(f"{self.chat.url}/v1/log/head")).content())
        self.assertEqual(head["size"], 3)
        with open(os.path.join(alice.home, "keydir.json")) as f:
            self.assertEqual(json.load(f)["kez.lat"], head)
        chat = ChatClient(self.chat.url, reactor)
        self.addCleanup(chat.close)
        [item] = (await chat.inbox(bob, "bob@kez.lat"))["messages"]
        opened = open_envelope(item["envelope"], bob, expected_sender=alice.account["primary"])
        self.assertEqual(
            opened.plaintext,
            {"type": "text", "text": "hi", "head": {"size": 3, "root": head["root"]}},
        )

        # a history rewritten under the same log key: carol's key swapped,
        # one more leaf; self-consistent, but it does not extend the kept head
        conn = sqlite3.connect(self.chat_config.db)
        seed = conn.execute("SELECT value FROM settings WHERE name = 'log_key'").fetchone()[0]
        leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        conn.close()
        forged = [
            canonical_json(registration(KeyPair.generate(), "carol"))
            if json.loads(leaf)["payload"]["handle"] == "carol" else leaf
            for leaf in leaves
        ]
        forged.append(canonical_json(registration(KeyPair.generate(), "dave")))
        relay.tamper = json_tamper(ForgedLog(bytes.fromhex(seed), forged).answer)
        result = await alice.run("send", "carol", "hi", env=via)
        assert_one_line_error(self, result, 1, "KEY DIRECTORY CHECK FAILED", "inconsistent")
        pinned = [c["fqhn"] for c in (await alice.ok("contacts", "--json")).lines]
        self.assertEqual(pinned, ["bob@kez.lat"])

    async def test_audit(self) -> None:
        await self.start_servers()
        alice, _bob, _carol = await self.registered("alice", "bob", "carol")
        result = await alice.ok("audit", "--json")
        self.assertEqual(
            {k: result.json[k] for k in ("ok", "size", "handles", "problem_count")},
            {"ok": True, "size": 3, "handles": 3, "problem_count": 0},
        )
        # a server that lists a leaf it rewrote: the root no longer matches
        relay = await start_hostile_relay(self, self.chat.url)

        def rule(path: str, query: Any, value: Any) -> Any:
            if path == "/v1/log/entries" and value.get("entries"):
                forged = canonical_json(registration(KeyPair.generate(), "bob"))
                return {"entries": [value["entries"][0], b64url(forged), *value["entries"][2:]]}
            return None

        relay.tamper = json_tamper(rule)
        result = await alice.run("audit", "--json", env={"KEZ_CHAT_SERVER_URL": relay.url})
        self.assertEqual(result.code, 1, str(result))
        verdict = json.loads(result.out.splitlines()[0])
        self.assertFalse(verdict["ok"])
        self.assertIn("root", " ".join(verdict["problems"]))

    async def test_split_view_caught_by_one_message_each_way(self) -> None:
        """
        The server shows carol (through the hostile relay) a directory
        where bob's key is its own, and alice the genuine one, of the same
        size. Each one's lookups pass; after one message each way, both
        see the loud warning.
        """
        await self.start_servers()
        alice, _bob, carol = await self.registered("alice", "bob", "carol")
        relay = await start_hostile_relay(self, self.chat.url)
        conn = sqlite3.connect(self.chat_config.db)
        seed = conn.execute("SELECT value FROM settings WHERE name = 'log_key'").fetchone()[0]
        leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        conn.close()
        # the three registered concurrently: find bob's leaf
        bob_index = next(i for i, leaf in enumerate(leaves)
                         if json.loads(leaf)["payload"]["handle"] == "bob")
        forged = list(leaves)
        forged[bob_index] = canonical_json(registration(KeyPair.generate(), "bob"))
        relay.tamper = json_tamper(ForgedLog(bytes.fromhex(seed), forged).answer)
        via = {"KEZ_CHAT_SERVER_URL": relay.url}
        await carol.ok("add", "alice", env=via)
        await alice.ok("add", "carol")
        await carol.ok("send", "alice", "hello from carol", env=via)
        await alice.ok("send", "carol", "hello from alice")
        warning = "THE SERVER IS SHOWING PEOPLE DIFFERENT KEY DIRECTORIES"

        async def received(user: Cli) -> dict[str, Any]:
            # listen also shows one's own sent copies (direction out)
            got = await user.ok("listen", "--json", "--count", "1", "--timeout", "20")
            [message] = [m for m in got.lines if m["direction"] == "in"]
            return message

        got = await received(alice)
        self.assertEqual(got["text"], "hello from carol")
        self.assertIn(warning, got["warning"])
        # (the relay does not stream; carol's kept head is the forged one
        # whichever server she reads her inbox from)
        got = await received(carol)
        self.assertEqual(got["text"], "hello from alice")
        self.assertIn(warning, got["warning"])


class BotKeyDirectoryTests(TestCase):
    """
    The example bot's own, dependency-free key directory checks: the
    interop vectors' proofs, and a hostile server's substitutions.
    """

    timeout = 60

    def test_vectors(self) -> None:
        bot = load_bot()
        log = json.loads((Path(__file__).parent.parent / "interop" / "python-vectors.json")
                         .read_text())["keylog"]
        roots = [bytes.fromhex(h["root"]) for h in log["heads"]]
        for p in log["inclusion"]:
            path = [bytes.fromhex(h) for h in p["path"]]
            leaf = bytes.fromhex(log["leaves"][p["index"]]["leaf_hash"])
            self.assertEqual(bot.root_from_inclusion(p["index"], p["size"], leaf, path),
                             roots[p["size"]])
        for p in log["consistency"]:
            path = [bytes.fromhex(h) for h in p["path"]]
            bot.check_consistency(p["from"], p["to"], path, roots[p["from"]], roots[p["to"]])
            if p["from"] < p["to"]:
                self.assertRaises(bot.KeyDirectoryError, bot.check_consistency, p["from"],
                                  p["to"], path, roots[0], roots[p["to"]])

    async def test_refuses_what_the_log_does_not_vouch_for(self) -> None:
        bot = load_bot()
        server = await start_server(self)
        http = http_client(self)
        for name in ("alice", "bob"):
            await register(http, server.url, name)
        relay = await start_hostile_relay(self, server.url)
        me = bot.Identity(os.urandom(32))
        kept: list[dict] = []
        honest = bot.Client(server.url, me, "echo", keep_head=kept.append)
        record = await deferToThread(honest.vouched, "bob")
        self.assertEqual(record["fqhn"], "bob@kez.lat")
        self.assertEqual(kept[-1]["size"], 2)

        attacker = KeyPair.generate().primary
        relay.tamper = json_tamper(
            lambda path, query, value: {**value, "primary": attacker}
            if path == "/v1/u/bob" else None
        )
        hostile = bot.Client(relay.url, me, "echo", kept_head=kept[-1], keep_head=kept.append)
        with self.assertRaises(bot.KeyDirectoryError):
            await deferToThread(hostile.vouched, "bob")

        # a forged history of the same size, signed with the server's key
        conn = sqlite3.connect(server.service.config.db)
        seed = conn.execute("SELECT value FROM settings WHERE name = 'log_key'").fetchone()[0]
        leaves = [bytes(r[0]) for r in conn.execute("SELECT leaf FROM log_leaves ORDER BY idx")]
        conn.close()
        forged = [leaves[0], canonical_json(registration(KeyPair.generate(), "bob"))]
        relay.tamper = json_tamper(ForgedLog(bytes.fromhex(seed), forged).answer)
        with self.assertRaises(bot.KeyDirectoryError):
            await deferToThread(hostile.vouched, "bob")


    async def test_first_message_pins_only_what_the_log_vouches_for(self) -> None:
        """
        The bot's first-use pin: a server that delivers a message from its
        own key under bob's name, and answers bob's lookup with that key,
        gets it refused with the key directory's reason and nothing pinned;
        a malformed proof is a refusal too, never a crash; a genuine first
        message is pinned.
        """
        bot = load_bot()
        server = await start_server(self)
        http = http_client(self)
        bob_key, _ = await register(http, server.url, "bob")
        relay = await start_hostile_relay(self, server.url)
        me = bot.Identity(os.urandom(32))
        attacker = KeyPair.generate()
        relay.tamper = json_tamper(
            lambda path, query, value: {**value, "primary": attacker.primary}
            if path == "/v1/u/bob@kez.lat" else None
        )
        state: dict[str, Any] = {}
        trust = bot.Trust(state, bot.Client(relay.url, me, "echo"))
        forged = {
            "seq": 1, "from": "bob@kez.lat", "from_primary": attacker.primary,
            "envelope": seal_envelope(attacker, me.primary, text_message("hi, it's bob")),
        }
        label, message, refused = await deferToThread(trust.check, me, forged)
        self.assertIsNone(label)
        self.assertEqual(message["text"], "hi, it's bob")
        self.assertIn("KEY DIRECTORY CHECK FAILED", refused or "")
        self.assertEqual(state["pins"], {})

        genuine = {
            "seq": 2, "from": "bob@kez.lat", "from_primary": bob_key.primary,
            "envelope": seal_envelope(bob_key, me.primary, text_message("hi")),
        }
        relay.tamper = json_tamper(
            lambda path, query, value: {**value, "leaf": 5}
            if path == "/v1/log/inclusion" else None
        )
        label, _, refused = await deferToThread(trust.check, me, genuine)
        self.assertIsNone(label)
        self.assertIn("malformed", refused or "")
        self.assertEqual(state["pins"], {})

        relay.tamper = None
        label, _, refused = await deferToThread(trust.check, me, genuine)
        self.assertIsNone(refused)
        self.assertEqual(label, "bob@kez.lat")
        self.assertEqual(state["pins"], {"bob@kez.lat": bob_key.primary})


class FirstMessagePinTests(TestCase):
    """
    A sender is pinned on first use only if the key directory vouches for
    the key its message came from: a server that delivers a message from
    its own key under bob's name (and answers bob's lookup with that key)
    gets the message shown unverified, and nothing pinned.
    """

    timeout = 60

    async def test_forged_sender_is_not_pinned(self) -> None:
        server = await start_server(self)
        http = http_client(self)
        carol_key, carol = await register(http, server.url, "carol")
        await register(http, server.url, "bob")
        relay = await start_hostile_relay(self, server.url)
        attacker = KeyPair.generate()
        relay.tamper = json_tamper(
            lambda path, query, value: {**value, "primary": attacker.primary}
            if path == "/v1/u/bob@kez.lat" else None
        )
        home = Home(Path(temp_dir(self)) / "carol")
        home.save_account({**carol, "server_url": relay.url, "secret": "file"})
        ctx = Context(reactor, Namespace(json=True), Output(True, io.StringIO(), io.StringIO()),
                      home, server_url=relay.url)
        self.addCleanup(ctx.close)
        reader = Reader(ctx, carol_key, ctx.account())
        item = {
            "seq": 1, "from": "bob@kez.lat", "from_primary": attacker.primary,
            "envelope": seal_envelope(attacker, carol_key.primary, text_message("hi, it's bob")),
        }
        message = await reader.read(item)
        self.assertFalse(message.verified)
        self.assertIn("KEY DIRECTORY CHECK FAILED", message.warning or "")
        self.assertIsNone(ctx.contacts.get("bob@kez.lat"))

        # a genuine sender, through the honest server, is pinned
        dave_key, _ = await register(http, server.url, "dave")
        honest = Context(reactor, Namespace(json=True), Output(True, io.StringIO(), io.StringIO()),
                         home, server_url=server.url)
        self.addCleanup(honest.close)
        item = {
            "seq": 2, "from": "dave@kez.lat", "from_primary": dave_key.primary,
            "envelope": seal_envelope(dave_key, carol_key.primary, text_message("hi")),
        }
        message = await Reader(honest, carol_key, honest.account()).read(item)
        self.assertTrue(message.verified, message.warning)
        self.assertEqual(honest.contacts.get("dave@kez.lat")["primary"], dave_key.primary)
