"""
C{kez-chat publish-files} and C{browse}, three CLI users against the real
chat-server and sig-server (in this process, port 0): public entries for
everyone, private ones only for the readers they are sealed to, and a
mirrored blob that is not the one the sigchain commits to is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kezchat.identity.keys import KeyPair
from kezchat.identity.mnemonic import mnemonic_to_seed
from kezchat.manifests import build_manifest, manifest_bytes, public_entry
from kezchat.protocol.auth import body_digest, sign_request
from tests.clisupport import Cli, CliTestCase, assert_one_line_error
from tests.support import http_client, temp_dir


class PublishBrowseTests(CliTestCase):
    timeout = 90

    async def setUp(self) -> None:
        await self.start_servers()
        self.dir = temp_dir(self)

    def file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def browse(self, reader: Cli, owner: str = "alice") -> list[dict[str, Any]]:
        return (await reader.ok("browse", owner, "--json")).lines

    async def test_private_entry_for_one_reader(self) -> None:
        """
        Public and private entries; bob may open the private one, carol
        may not; publishing a file of the same name again replaces its
        entry; mistakes get one line and exit 1.
        """
        alice, bob, carol = await self.registered("alice", "bob", "carol")
        cv = self.file("cv.pdf", b"%PDF public")
        tax = self.file("tax.pdf", b"%PDF private")
        first = (await alice.ok("publish-files", cv, "--json")).json
        self.assertEqual([e["visibility"] for e in first["entries"]], ["public"])
        second = (await alice.ok("publish-files", tax, "--private-to", "bob", "--json")).json
        self.assertEqual([e["visibility"] for e in second["entries"]], ["private"])
        self.assertNotEqual(first["manifest_blake3"], second["manifest_blake3"])

        seen = await self.browse(bob)
        self.assertEqual(
            [(e["name"], e["visibility"], e["owner"], e["size"]) for e in seen],
            [
                ("cv.pdf", "public", "alice@kez.lat", 11),
                ("tax.pdf", "private", "alice@kez.lat", 12),
            ],
        )
        seen = await self.browse(carol)
        self.assertEqual([(e["name"], e["visibility"]) for e in seen], [("cv.pdf", "public")])
        seen = await self.browse(alice)  # the owner opens her own private entries
        self.assertEqual([e["name"] for e in seen], ["cv.pdf", "tax.pdf"])
        self.assertEqual(await self.browse(alice, owner="carol"), [])

        with open(cv, "wb") as f:
            f.write(b"%PDF public, version 2")
        await alice.ok("publish-files", cv, "--json")
        seen = await self.browse(carol)
        self.assertEqual([(e["name"], e["size"]) for e in seen], [("cv.pdf", 22)])
        # public entries first, then the private ones this reader may open
        self.assertEqual([e["name"] for e in await self.browse(bob)], ["cv.pdf", "tax.pdf"])

        missing = await alice.run("publish-files", os.path.join(self.dir, "nope"))
        assert_one_line_error(self, missing, 1, "not a readable file")
        unknown = await bob.run("browse", "nobody", "--json")
        assert_one_line_error(self, unknown, 1, "not registered")
        stranger = await alice.run("publish-files", cv, "--private-to", "nobody")
        assert_one_line_error(self, stranger, 1, "not registered")

    async def test_mirror_not_what_the_chain_says(self) -> None:
        """
        The server's copy is signed by alice but is not the blob her chain
        commits to: browse refuses it (exit 1, one line), shows nothing.
        """
        alice, bob = await self.registered("alice", "bob")
        await alice.ok("publish-files", self.file("a.txt", b"a"), "--json")
        key = KeyPair(mnemonic_to_seed(alice.mnemonic))
        entry = public_entry(
            id="x",
            name="x.txt",
            size=1,
            mime="text/plain",
            blake3="11" * 32,
            added_at="2026-11-30T00:00:00Z",
        )
        other = manifest_bytes(build_manifest(key, [entry]))
        stamp = sign_request(
            key, "PUT", "/v1/manifests/alice", [body_digest(other)], int(time.time())
        )
        response = await http_client(self).put(
            f"{self.chat.url}/v1/manifests/alice", data=other, headers={"x-kez-auth": stamp}
        )
        self.assertEqual(response.code, 201)
        result = await bob.run("browse", "alice", "--json")
        assert_one_line_error(self, result, 1, "does not verify")
