"""
Failures a person can cause, and what C{kez-chat} says about them: one
line on stderr saying what happened and what to do, exit 1 (2 for a
command line that does not parse), nothing on stdout, never a traceback.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred, gatherResults

from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import seed_to_mnemonic
from kezchat.testing.natsserver import free_port
from tests.clisupport import CliTestCase, Result, assert_one_line_error


async def together(*calls: Any) -> list[Result]:
    return await gatherResults([ensureDeferred(c) for c in calls])


class ErrorTests(CliTestCase):
    async def test_server_unreachable(self) -> None:
        """
        Nothing listens on the port: register, and later commands of a
        registered account, say so and exit 1.
        """
        await self.start_servers()
        [alice] = await self.registered("alice")
        dead = {"KEZ_CHAT_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
        nobody = self.user("nobody", **dead)
        results = await together(
            nobody.run("register", "nobody", "--yes", "--json"),
            alice.run("send", "bob", "hi", "--json", env=dead),
            alice.run("listen", "--json", "--timeout", "5", env=dead),
            alice.run("add", "bob", env=dead),
            self.user("again").run("recover", "--yes", stdin=alice.mnemonic.encode(), env=dead),
        )
        for result in results:
            assert_one_line_error(self, result, 1, "cannot reach", "127.0.0.1")

    async def test_handles(self) -> None:
        """
        Taken, reserved, malformed and unknown handles; yourself.
        """
        await self.start_servers()
        [alice] = await self.registered("alice")
        taken, reserved, bad, foreign, unknown, self_add, unknown_send = await together(
            self.user("alice2").run("register", "alice", "--yes", "--json"),
            self.user("admin").run("register", "admin", "--yes"),
            self.user("bad").run("register", "No Way!", "--yes"),
            self.user("foreign").run("register", "carol@elsewhere.example", "--yes"),
            alice.run("add", "nobody", "--json"),
            alice.run("add", "alice"),
            alice.run("send", "nobody", "hello?"),
        )
        assert_one_line_error(self, taken, 1, "alice@kez.lat is taken", "another handle")
        assert_one_line_error(self, reserved, 1, "reserved")
        assert_one_line_error(self, bad, 1, "not a valid handle")
        assert_one_line_error(self, foreign, 1, "is kez.lat, not elsewhere.example")
        assert_one_line_error(self, unknown, 1, "nobody@kez.lat is not registered")
        assert_one_line_error(self, self_add, 1, "is you")
        assert_one_line_error(self, unknown_send, 1, "nobody@kez.lat is not registered")

    async def test_words_and_passphrases(self) -> None:
        """
        Wrong words (not a word list, a bad checksum, a key nobody
        registered), a wrong passphrase, and no passphrase at all.
        """
        await self.start_servers(keyring=False)
        alice, _bob = await self.registered("alice", "bob")
        words = alice.mnemonic.split()
        swapped = " ".join([words[1], words[0], *words[2:]])
        stranger = seed_to_mnemonic(KeyPair.generate().seed)
        unset = {"KEZ_CHAT_PASSPHRASE": None}
        results = await together(
            self.user("r1").run("recover", "--yes", stdin=b"these are not the words\n"),
            self.user("r2").run("recover", "--yes", stdin=swapped.encode()),
            self.user("r3").run("recover", "--yes", "--json", stdin=stranger.encode()),
            alice.run("send", "bob", "x", env={"KEZ_CHAT_PASSPHRASE": "not it"}),
            alice.run("listen", "--json", env={"KEZ_CHAT_PASSPHRASE": "not it"}),
            self.user("nopass").run("register", "nopass", "--yes", env={"KEZ_CHAT_PASSPHRASE": ""}),
            self.user("unset").run("register", "unset", "--yes", env=unset),
            alice.run("send", "bob", "x", env=unset),
        )
        bad_list, bad_checksum, unknown_key, wrong1, wrong2, empty, unset1, unset2 = results
        assert_one_line_error(self, bad_list, 1, "not 24 valid recovery words")
        # a swap of two words almost always breaks the checksum; if it
        # happens to pass, it is another key, which no handle belongs to
        self.assertEqual(bad_checksum.code, 1, str(bad_checksum))
        self.assertNotIn("Traceback", bad_checksum.err)
        assert_one_line_error(self, unknown_key, 1, "no handle", "check the words")
        assert_one_line_error(self, wrong1, 1, "wrong passphrase", "KEZ_CHAT_PASSPHRASE")
        assert_one_line_error(self, wrong2, 1, "wrong passphrase")
        assert_one_line_error(self, empty, 1, "KEZ_CHAT_PASSPHRASE")
        assert_one_line_error(self, unset1, 1, "set KEZ_CHAT_PASSPHRASE or run in a terminal")
        assert_one_line_error(self, unset2, 1, "KEZ_CHAT_PASSPHRASE")

    async def test_usage_and_state(self) -> None:
        """
        Command lines that do not parse exit 2; commands that need an
        account in an empty home exit 1 and say how to get one.
        """
        await self.start_servers()
        empty = self.user("empty")
        eve = self.user("eve")
        no_server = {"KEZ_CHAT_SERVER_URL": None}
        results = await together(
            empty.run(),
            empty.run("frobnicate"),
            empty.run("listen", "--count", "many"),
            empty.run("send", "bob"),
            empty.run("register", "zed"),  # no --yes and stdin is not a terminal
            empty.run("whoami"),
            empty.run("send", "bob", "x"),
            # with no server at all, a bare handle cannot say which one
            eve.run("register", "eve", "--yes", env=no_server),
        )
        for result in results[:5]:
            self.assertEqual(result.code, 2, str(result))
            self.assertNotIn("Traceback", result.err)
            self.assertEqual(result.out, "")
        for result in results[5:7]:
            assert_one_line_error(self, result, 1, "no account in", "kez-chat register")
        assert_one_line_error(self, results[7], 1, "which chat server", "--server")

        # the globals: --server alone, KEZ_CHAT_HOME alone
        await eve.ok("--server", self.chat.url, "register", "eve", "--yes", "--json", env=no_server)
        me = await eve.ok("whoami", "--json", env={"KEZ_CHAT_HOME": eve.home})
        self.assertEqual(me.json["fqhn"], "eve@kez.lat")
