"""
The C{kez-chat} CLI end to end: real processes against a real kezchat and
kezsig. Register, recover, add, chat both ways, resume after restarts of
the CLI and of the server, acknowledge, and show unverifiable messages as
warnings.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults

from kezchat.client.http import ChatClient
from kezchat.e2e import seal_envelope, text_message
from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from tests.clisupport import CliTestCase, Result, assert_one_line_error
from tests.relaysupport import inbox
from tests.support import http_client, json_of, register


async def both(*calls: Any) -> list[Result]:
    """
    Run CLI calls at the same time (independent ones: fewer waits).
    """
    return await gatherResults([ensureDeferred(c) for c in calls])


class ChatFlowTests(CliTestCase):
    async def test_register_add_and_chat_both_ways(self) -> None:
        """
        Two users register, find each other, and talk; each listen shows
        only what is new since the last one.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        client = http_client(self)

        account = alice.account
        self.assertEqual(account["fqhn"], "alice@kez.lat")
        self.assertEqual(len(alice.mnemonic.split()), 24)
        self.assertEqual(KeyPair(mnemonic_to_seed(alice.mnemonic)).primary, account["primary"])
        chain = await json_of(await client.get(account["sigchain_url"]))
        endpoints = {e["body"]["protocol"]: e["body"] for e in chain["events"]}
        hex_key = account["primary"].split(":")[1]
        self.assertEqual(endpoints["iroh"]["node_id"], hex_key)
        self.assertEqual(endpoints["nats"]["inbox"], f"kez.inbox.{hex_key}")

        whoami, added = await both(alice.ok("whoami", "--json"), alice.ok("--json", "add", "bob"))
        self.assertEqual(
            whoami.json, {"handle": "alice", "fqhn": "alice@kez.lat", "primary": account["primary"]}
        )
        self.assertEqual(
            added.json,
            {
                "handle": "bob",
                "fqhn": "bob@kez.lat",
                "primary": bob.account["primary"],
                "pinned": True,
            },
        )
        contacts, sent = await both(
            alice.ok("contacts", "--json"), alice.ok("send", "bob", "hello bob", "--json")
        )
        self.assertEqual(contacts.lines, [added.json])
        self.assertEqual(sent.json, {"to": "bob@kez.lat", "seq": 1})
        await alice.ok("send", "bob@kez.lat", "second, with ünïcode ✓", "--json")

        # bob reads, and answers (pinning alice on first use either way)
        listened, _ = await both(
            bob.ok("listen", "--json", "--count", "2", "--timeout", "20"),
            bob.ok("send", "alice", "hi alice", "--json"),
        )
        got = listened.received
        self.assertEqual([m["text"] for m in got], ["hello bob", "second, with ünïcode ✓"])
        first = got[0]
        self.assertEqual(first["seq"], 1)
        self.assertEqual(first["from"], "alice@kez.lat")
        self.assertEqual(first["from_primary"], account["primary"])
        self.assertIs(first["verified"], True)
        self.assertEqual(first["type"], "text")
        self.assertIn("ts", first)

        # alice's first listen sees the answer; a second one shows nothing
        got = (await alice.ok("listen", "--json", "--count", "1", "--timeout", "20")).received
        self.assertEqual(
            [(m["from"], m["text"], m["verified"]) for m in got],
            [("bob@kez.lat", "hi alice", True)],
        )
        again, _ = await both(
            alice.ok("listen", "--json", "--timeout", "1.5"),
            alice.ok("send", "bob", "plain words"),
        )
        self.assertEqual(again.received, [])  # her own sent copy, at most

        # human output
        human = await bob.ok("listen", "--count", "1", "--timeout", "20")
        self.assertIn("alice@kez.lat: plain words", human.out)

    async def test_recover_on_a_second_device(self) -> None:
        """
        The words restore the same key and handle in another home; both
        devices then read the same inbox, each with its own cursor, and
        neither deletes anything from the server.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        laptop = self.user("alice-laptop")
        recovered = await laptop.ok("recover", "--yes", "--json", stdin=alice.mnemonic.encode())
        identity = recovered.json
        self.assertEqual(identity.pop("history")["messages"], 0)
        self.assertEqual(identity, (await alice.ok("whoami", "--json")).json)

        await bob.ok("send", "alice", "to both devices")
        one, two = await gatherResults(
            [
                ensureDeferred(alice.ok("listen", "--json", "--count", "1", "--timeout", "20")),
                ensureDeferred(laptop.ok("listen", "--json", "--count", "1", "--timeout", "20")),
            ]
        )
        self.assertEqual([m["text"] for m in one.received], ["to both devices"])
        self.assertEqual([m["text"] for m in two.received], ["to both devices"])
        alice_key = KeyPair(mnemonic_to_seed(alice.mnemonic))
        code, body = await inbox(http_client(self), self.chat.url, alice_key, "alice")
        # bob's message is still there, with the copies of the delivered
        # receipts each device sent him
        self.assertEqual(
            (code, [m["direction"] for m in body["messages"]]), (200, ["in", "out", "out"])
        )

    async def test_listen_resumes_across_cli_and_server_restarts(self) -> None:
        """
        A listen that runs while the server restarts reconnects with
        Last-Event-ID and shows every message once; a later listen starts
        after what the first one saved; --ack deletes what was saved, even
        when the listen is stopped by a signal.
        """
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("send", "bob", "m1")
        # (receipts off: this is about resuming, and bob's own receipts
        # would add sent copies to his inbox)
        listening = bob.spawn(
            "listen", "--json", "--count", "3", "--timeout", "60", "--no-receipts"
        )
        await listening.wait_lines(1)

        await self.restart_chat(down=2.0)  # refused connections meanwhile: it keeps trying
        await alice.ok("send", "bob", "m2")
        await alice.ok("send", "bob", "m3")
        result = await listening.done
        self.assertEqual(result.code, 0, str(result))
        self.assertEqual([m["text"] for m in result.lines], ["m1", "m2", "m3"])
        self.assertEqual([m["seq"] for m in result.lines], [1, 2, 3])
        self.assertIn("reconnecting", result.err)
        self.assertIn("reconnected", result.err)
        self.assertNotIn("Traceback", result.err)

        # a listen stopped by SIGTERM still acknowledges what it saved
        later = bob.spawn("listen", "--json", "--ack", "--no-receipts")
        await alice.ok("send", "bob", "m4")
        await later.wait_lines(1)
        later.terminate()
        stopped = await later.done
        self.assertEqual(stopped.code, 130, str(stopped))
        self.assertEqual([m["text"] for m in stopped.lines], ["m4"])
        self.assertNotIn("Traceback", stopped.err)
        bob_key = KeyPair(mnemonic_to_seed(bob.mnemonic))
        code, body = await inbox(http_client(self), self.chat.url, bob_key, "bob")
        self.assertEqual((code, body["messages"]), (200, []))
        with open(os.path.join(bob.home, "cursor.json")) as f:
            self.assertEqual(json.load(f), {"sse": 4})

    async def test_unverifiable_messages_are_shown_as_warnings(self) -> None:
        """
        A message whose envelope does not verify, or that comes from a key
        other than the one pinned for its sender, is shown with
        "verified": false and a warning on stderr; nothing is dropped.
        """
        await self.start_servers()
        [bob] = await self.registered("bob")
        client = http_client(self)
        mallory, _ = await register(client, self.chat.url, "mallory")
        bob_primary = bob.account["primary"]
        chat = ChatClient(self.chat.url, reactor)
        self.addCleanup(chat.close)

        good = seal_envelope(mallory, bob_primary, text_message("genuine"))
        tampered = dict(seal_envelope(mallory, bob_primary, text_message("forged")))
        tampered["ts"] = "2020-01-01T00:00:00Z"
        await chat.send(mallory, "mallory", "bob", good)
        await chat.send(mallory, "mallory", "bob", tampered)
        await chat.send(mallory, "mallory", "bob", {"not": "an envelope"})
        result = await bob.ok(
            "listen", "--json", "--count", "3", "--timeout", "20", "--no-receipts"
        )
        lines = result.lines
        self.assertEqual([m["verified"] for m in lines], [True, False, False])
        self.assertEqual(lines[0]["text"], "genuine")
        self.assertEqual([m["seq"] for m in lines], [1, 2, 3])
        self.assertIn("bad_signature", lines[1]["warning"])
        self.assertIn("malformed", lines[2]["warning"])
        self.assertEqual(result.err.count("not verified"), 2, result.err)

        # mallory's handle is now pinned (first message verified); a message
        # under her handle from another key is a loud warning
        with open(os.path.join(bob.home, "contacts.json")) as f:
            contacts = json.load(f)
        contacts["contacts"]["mallory@kez.lat"]["primary"] = KeyPair.generate().primary
        with open(os.path.join(bob.home, "contacts.json"), "w") as f:
            json.dump(contacts, f)
        await chat.send(
            mallory, "mallory", "bob", seal_envelope(mallory, bob_primary, text_message("new key?"))
        )
        result = await bob.ok("listen", "--json", "--count", "1", "--timeout", "20")
        [line] = result.lines
        self.assertIs(line["verified"], False)
        self.assertIn("key changed", line["warning"])
        self.assertIn("key changed", result.err)

    async def test_without_a_sig_server(self) -> None:
        """
        A chat-server configured with no sig-server gives records without
        a sigchain_url: the CLI registers, pins and chats anyway, and says
        what it could not do.
        """
        await self.start_servers(sig_server_url=None)
        users = [self.user("alice"), self.user("bob")]
        results = await gatherResults(
            [
                ensureDeferred(u.run("register", name, "--yes", "--json"))
                for u, name in zip(users, ["alice", "bob"], strict=True)
            ]
        )
        for result in results:
            self.assertEqual(result.code, 0, str(result))
            self.assertIn("no sigchain was started", result.err)
        alice, bob = users
        added = await alice.ok("add", "bob", "--json")
        self.assertIs(added.json["pinned"], True)
        self.assertIn("pinned on the server's word alone", added.err)
        await alice.ok("send", "bob", "no chains needed")
        got = await bob.ok("listen", "--json", "--count", "1", "--timeout", "20")
        self.assertEqual((got.json["text"], got.json["verified"]), ("no chains needed", True))
        laptop = self.user("laptop")
        words = results[1].json["mnemonic"]
        recovered = await laptop.ok("recover", "--yes", "--json", stdin=words.encode())
        self.assertEqual(recovered.json["fqhn"], "bob@kez.lat")

    async def test_add_refuses_a_changed_key(self) -> None:
        await self.start_servers()
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("add", "bob")
        path = os.path.join(alice.home, "contacts.json")
        with open(path) as f:
            contacts = json.load(f)
        old = KeyPair.generate().primary
        contacts["contacts"]["bob@kez.lat"]["primary"] = old
        with open(path, "w") as f:
            json.dump(contacts, f)
        result = await alice.run("add", "bob", "--json")
        assert_one_line_error(self, result, 1, "key changed", old)
        self.assertIn("key changed", result.err)  # the words scripts look for, as written
        # sending to him is refused too: nothing is sealed to a disputed key
        assert_one_line_error(self, await alice.run("send", "bob", "hi"), 1, "key changed")
        replaced = await alice.ok("add", "bob", "--replace-key", "--json")
        self.assertEqual(replaced.json["primary"], bob.account["primary"])
        await alice.ok("send", "bob", "hi")


class TerminalTests(CliTestCase):
    """
    The interactive paths, on a pseudo-terminal: the recall check after
    the words are shown, passphrases typed (not taken from the
    environment), and words typed to recover.
    """

    async def test_register_and_recover_at_a_terminal(self) -> None:
        await self.start_servers(keyring=False)
        no_passphrase = {"KEZ_CHAT_PASSPHRASE": ""}
        carol = self.user("carol")
        carol.env = {k: v for k, v in carol.env.items() if k != "KEZ_CHAT_PASSPHRASE"}

        term = carol.terminal("register", "carol")
        self.addCleanup(term.kill)
        await term.expect("Passphrase for the key file: ")
        term.type("typed at the terminal")
        await term.expect("The same passphrase again: ")
        term.type("typed at the terminal")
        shown = await term.expect(r"Your 24 recovery words[^\n]*\n[^\n]*\n\n((?:[^\n]*\n){8})")
        words = dict((int(n), w) for n, w in re.findall(r"(\d+)\. ([a-z]+)", shown.group(1)))
        self.assertEqual(sorted(words), list(range(1, 25)))
        asked = []
        for _ in range(3):
            position = int((await term.expect(r"Word #(\d+): ")).group(1))
            asked.append(position)
            term.type(words[position].upper() + "  ")  # case and spaces do not matter
        self.assertEqual(len(set(asked)), 3)
        await term.expect("Registered carol@kez.lat")
        self.assertEqual(await term.done, 0)
        mnemonic = " ".join(words[i] for i in range(1, 25))
        self.assertEqual(KeyPair(mnemonic_to_seed(mnemonic)).primary, carol.account["primary"])
        # the typed passphrase is the one that opens the key file
        unlocked = await carol.run(
            "listen", "--timeout", "0.5", env={"KEZ_CHAT_PASSPHRASE": "typed at the terminal"}
        )
        self.assertEqual(unlocked.code, 0, str(unlocked))

        # a person who did not write the words down registers nothing
        dave = self.user("dave", **no_passphrase)
        term = dave.terminal("register", "dave", env={"KEZ_CHAT_PASSPHRASE": "dave passphrase"})
        self.addCleanup(term.kill)
        await term.expect(r"Word #\d+: ")
        for _ in range(2):
            term.type("wrong")
            await term.expect(r"That is not it\.[\s\S]*?Word #\d+: ")
        term.type("wrong")
        await term.expect("nothing was registered")
        self.assertEqual(await term.done, 1)
        missing = await carol.run("add", "dave")
        assert_one_line_error(self, missing, 1, "dave@kez.lat is not registered")

        # recover with the words typed (not echoed) at the terminal
        laptop = self.user("laptop", **no_passphrase)
        term = laptop.terminal("recover", env={"KEZ_CHAT_PASSPHRASE": "laptop passphrase"})
        self.addCleanup(term.kill)
        await term.expect("Your 24 recovery words")
        term.type(mnemonic)
        await term.expect("Recovered carol@kez.lat")
        self.assertEqual(await term.done, 0)
        self.assertNotIn(words[7], term.screen)  # getpass: the words were not echoed
