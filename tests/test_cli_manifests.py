"""
C{kez-chat publish-files} and C{browse}, three CLI users against the real
chat-server and sig-server (in this process, port 0): public entries for
everyone, private ones only for the readers they are sealed to, and a
mirrored blob that is not the one the sigchain commits to is refused.
"""

from __future__ import annotations

import json
import os
import time

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from kezchat.manifests import build_manifest, manifest_bytes, public_entry
from kezchat.relay.auth import body_digest, sign_request
from tests.p2psupport import CliProcess, Result, cli_env, start_cli
from tests.sigsupport import start_sig_server
from tests.support import http_client, start_server, temp_dir


class PublishBrowseTests(TestCase):
    timeout = 90

    async def setUp(self) -> None:
        sig = await start_sig_server(self)
        self.chat = await start_server(self, sig_server_url=sig.url)
        self.dir = temp_dir(self)
        self.env = cli_env(self.chat.url)

    async def register(self, *users: str) -> KeyPair:
        """
        Register C{users} (at once); the first one's key.
        """
        results = await gatherResults(
            [self.start(u, "register", u, "--yes", "--json").ended for u in users]
        )
        for result in results:
            self.assertEqual(result.code, 0, result)
        return KeyPair(mnemonic_to_seed(json.loads(results[0].out)["mnemonic"]))

    def start(self, user: str, *args: str) -> CliProcess:
        process = start_cli(os.path.join(self.dir, user), self.env, *args)

        def stop() -> object:
            process.kill()
            return process.ended

        self.addCleanup(stop)
        return process

    async def cli(self, user: str, *args: str) -> Result:
        result = await self.start(user, *args).ended
        self.assertNotIn("Traceback", result.err)
        return result

    def file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def browse(self, reader: str, owner: str = "alice") -> list[dict]:
        result = await self.cli(reader, "browse", owner, "--json")
        self.assertEqual(result.code, 0, result)
        return [json.loads(line) for line in result.lines()]

    async def test_private_entry_for_one_reader(self) -> None:
        """
        Public and private entries; bob may open the private one, carol
        may not; publishing a file of the same name again replaces its
        entry; mistakes get one line and exit 1.
        """
        await self.register("alice", "bob", "carol")
        cv = self.file("cv.pdf", b"%PDF public")
        tax = self.file("tax.pdf", b"%PDF private")
        published = await self.cli("alice", "publish-files", cv, "--json")
        self.assertEqual(published.code, 0, published)
        first = json.loads(published.out)
        self.assertEqual([e["visibility"] for e in first["entries"]], ["public"])
        published = await self.cli("alice", "publish-files", tax, "--private-to", "bob", "--json")
        self.assertEqual(published.code, 0, published)
        second = json.loads(published.out)
        self.assertEqual([e["visibility"] for e in second["entries"]], ["private"])
        self.assertNotEqual(first["manifest_blake3"], second["manifest_blake3"])

        bob = await self.browse("bob")
        self.assertEqual(
            [(e["name"], e["visibility"], e["owner"]) for e in bob],
            [("cv.pdf", "public", "alice@kez.lat"), ("tax.pdf", "private", "alice@kez.lat")],
        )
        self.assertEqual([e["size"] for e in bob], [11, 12])
        carol = await self.browse("carol")
        self.assertEqual([(e["name"], e["visibility"]) for e in carol], [("cv.pdf", "public")])
        alice = await self.browse("alice")  # the owner opens her own private entries
        self.assertEqual([e["name"] for e in alice], ["cv.pdf", "tax.pdf"])
        nothing = await self.browse("alice", owner="carol")
        self.assertEqual(nothing, [])

        with open(cv, "wb") as f:
            f.write(b"%PDF public, version 2")
        result = await self.cli("alice", "publish-files", cv, "--json")
        self.assertEqual(result.code, 0, result)
        entries = await self.browse("carol")
        self.assertEqual([(e["name"], e["size"]) for e in entries], [("cv.pdf", 22)])
        # public entries first, then the private ones this reader may open
        self.assertEqual([e["name"] for e in await self.browse("bob")], ["cv.pdf", "tax.pdf"])

        missing = await self.cli("alice", "publish-files", os.path.join(self.dir, "nope"))
        self.assertEqual(missing.code, 1)
        self.assertIn("not a readable file", missing.err)
        unknown = await self.cli("bob", "browse", "nobody", "--json")
        self.assertEqual(unknown.code, 1)
        self.assertIn("not registered", unknown.err)
        stranger = await self.cli("alice", "publish-files", cv, "--private-to", "nobody")
        self.assertEqual(stranger.code, 1)
        self.assertIn("not registered", stranger.err)

    async def test_mirror_not_what_the_chain_says(self) -> None:
        """
        The server's copy is signed by alice but is not the blob her chain
        commits to: browse refuses it (exit 1, one line), shows nothing.
        """
        alice = await self.register("alice", "bob")
        await self.cli("alice", "publish-files", self.file("a.txt", b"a"), "--json")
        other = manifest_bytes(
            build_manifest(
                alice,
                [
                    public_entry(
                        id="x",
                        name="x.txt",
                        size=1,
                        mime="text/plain",
                        blake3="11" * 32,
                        added_at="2026-11-30T00:00:00Z",
                    )
                ],
            )
        )
        stamp = sign_request(
            alice, "PUT", "/v1/manifests/alice", [body_digest(other)], int(time.time())
        )
        response = await http_client(self).put(
            f"{self.chat.url}/v1/manifests/alice", data=other, headers={"x-kez-auth": stamp}
        )
        self.assertEqual(response.code, 201)
        result = await self.cli("bob", "browse", "alice", "--json")
        self.assertEqual(result.code, 1, result)
        self.assertEqual(result.out, "")
        self.assertIn("does not verify", result.err)
        self.assertEqual(len(result.err.splitlines()), 1)
