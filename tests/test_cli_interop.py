"""
The CLI talking to other clients: to a client written only with the
package's protocol helpers (HTTP, SSE, the envelope), and, through the
NATS bridge, a CLI on native NATS to a CLI on SSE.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.trial import unittest

from kezchat.client.http import ChatClient, SigClient
from kezchat.client.sse import Event
from kezchat.client.stream import open_stream
from kezchat.e2e import (
    CHUNK_BYTES,
    ChunkAssembler,
    chunked_file,
    inline_file,
    open_envelope,
    seal_envelope,
    text_message,
)
from kezchat.identity.keys import KeyPair
from kezchat.sigchain import bodies, next_event
from kezchat.testing.natsserver import free_port
from tests.clisupport import CliTestCase, assert_one_line_error
from tests.natssupport import start_nats_server
from tests.support import temp_dir


class PackageClient:
    """
    A second client made of the package's SPEC-level helpers only.
    """

    def __init__(self, case: unittest.TestCase, url: str, handle: str) -> None:
        self.key = KeyPair.generate()
        self.handle = handle
        self.chat = ChatClient(url, reactor)
        self.sig = SigClient(reactor)
        case.addCleanup(self.chat.close)
        case.addCleanup(self.sig.close)
        self.items: list[dict[str, Any]] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    async def register(self) -> dict[str, Any]:
        record = await self.chat.register(self.key, self.handle, "kez.lat")
        events: list[Any] = []
        for body in (bodies.add_endpoint("iroh", "iroh", node_id=self.key.public_hex),):
            event = next_event(self.key, events, bodies.ADD_ENDPOINT, body)
            await self.sig.append(record["sigchain_url"], event)
            events.append(event)
        return record

    def _event(self, event: Event) -> None:
        if event.event == "message":
            item = json.loads(event.data)
            if item.get("direction") == "out":
                return  # its own sent copies: this client only reads what it receives
            self.items.append(item)
            for n, d in list(self._waiting):
                if len(self.items) >= n:
                    self._waiting.remove((n, d))
                    d.callback(None)

    async def listen(self, case: unittest.TestCase) -> None:
        stream = await open_stream(
            self.chat.stream_agent,
            self.chat.stream_url(self.key, self.handle),
            self._event,
            last_event_id=0,
        )
        case.addCleanup(stream.close)

    def wait_for(self, n: int, timeout: float = 20.0) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if len(self.items) >= n:
            d.callback(None)
        else:
            self._waiting.append((n, d))
            d.addTimeout(timeout, reactor)
        return d


class PackageClientInteropTests(CliTestCase):
    async def test_cli_and_package_client_talk(self) -> None:
        await self.start_servers()
        [alice] = await self.registered("alice")
        bob = PackageClient(self, self.chat.url, "bob")
        await bob.register()
        await bob.listen(self)

        added = (await alice.ok("add", "bob", "--json")).json
        self.assertEqual(added["primary"], bob.key.primary)
        sent = (await alice.ok("send", "bob", "hello from the CLI", "--json")).json
        await bob.wait_for(1)
        [item] = bob.items
        self.assertEqual((item["seq"], item["from"]), (sent["seq"], "alice@kez.lat"))
        opened = open_envelope(item["envelope"], bob.key, expected_sender=alice.account["primary"])
        # the CLI gossips the key directory head it verified (alice, bob: 2 leaves)
        head = await bob.chat.log_head()
        self.assertEqual(head["size"], 2)
        self.assertEqual(
            opened.plaintext,
            {
                "type": "text",
                "text": "hello from the CLI",
                "head": {"size": head["size"], "root": head["root"]},
            },
        )

        alice_primary = alice.account["primary"]
        await bob.chat.send(
            bob.key, "bob", "alice", seal_envelope(bob.key, alice_primary, text_message("hi, CLI"))
        )
        picture = inline_file("dot.png", "image/png", b"\x89PNG not really")
        await bob.chat.send(
            bob.key, "bob@kez.lat", "alice@kez.lat", seal_envelope(bob.key, alice_primary, picture)
        )
        result = await alice.ok("listen", "--json", "--count", "2", "--timeout", "20")
        # first her own copy of what she sent (seq 1 of her inbox)
        self.assertEqual(
            [(m["seq"], m["direction"], m["to"]) for m in result.lines[:1]],
            [(1, "out", "bob@kez.lat")],
        )
        got = result.received
        self.assertEqual(
            got[0],
            {
                "seq": 2,
                "from": "bob@kez.lat",
                "from_primary": bob.key.primary,
                "direction": "in",
                "to": "alice@kez.lat",
                "ts": got[0]["ts"],
                "created_at": got[0]["created_at"],
                "verified": True,
                "type": "text",
                "text": "hi, CLI",
            },
        )
        self.assertEqual(
            {k: v for k, v in got[1].items() if k not in ("ts", "created_at")},
            {
                "seq": 3,
                "from": "bob@kez.lat",
                "direction": "in",
                "to": "alice@kez.lat",
                "from_primary": bob.key.primary,
                "verified": True,
                "type": "file",
                "mode": "inline",
                "name": "dot.png",
                "mime": "image/png",
                "size": 15,
            },
        )


class AttachmentTests(CliTestCase):
    async def test_files_inside_messages_both_ways(self) -> None:
        """
        The web app's attachments: a chunked file whose pieces arrive out
        of order and across two runs of listen is written once complete;
        a file the CLI sends is reassembled by a package client.
        """
        await self.start_servers()
        [alice] = await self.registered("alice")
        bob = PackageClient(self, self.chat.url, "bob")
        await bob.register()
        await bob.listen(self)
        alice_primary = alice.account["primary"]
        downloads = os.path.join(temp_dir(self), "downloads")

        async def send(plaintext: dict[str, Any]) -> None:
            envelope = seal_envelope(bob.key, alice_primary, plaintext)
            await bob.chat.send(bob.key, "bob", "alice", envelope)

        data = os.urandom(2 * CHUNK_BYTES + 1000)
        header, chunks = chunked_file("report.pdf", "application/pdf", data)
        self.assertEqual(len(chunks), 3)
        await send(chunks[2])
        await send(header)
        first = await alice.ok(
            "listen", "--save-files", downloads, "--json", "--count", "2", "--timeout", "20",
            "--no-receipts",
        )
        self.assertEqual([m.get("saved") for m in first.lines], [None, None])
        self.assertFalse(os.path.exists(downloads))
        await send(chunks[0])
        await send(inline_file("note.txt", "text/plain", b"small"))
        await send(chunks[1])
        second = await alice.ok(
            "listen", "--save-files", downloads, "--json", "--count", "3", "--timeout", "20",
            "--no-receipts",
        )
        saved = [m.get("saved") for m in second.lines]
        self.assertEqual(
            saved,
            [None, os.path.join(downloads, "note.txt"), os.path.join(downloads, "report.pdf")],
        )
        with open(saved[2], "rb") as f:
            self.assertEqual(f.read(), data)
        with open(saved[1], "rb") as f:
            self.assertEqual(f.read(), b"small")
        self.assertNotIn("data", second.lines[1])

        # the other way: the CLI sends a chunked file, the package client
        # puts it back together
        path = os.path.join(temp_dir(self), "photo.jpg")
        picture = os.urandom(CHUNK_BYTES + 5)
        with open(path, "wb") as f:
            f.write(picture)
        sent = (await alice.ok("send-file", "bob", path, "--json")).json
        self.assertEqual(
            {k: sent[k] for k in ("to", "name", "size", "mode", "messages")},
            {
                "to": "bob@kez.lat",
                "name": "photo.jpg",
                "size": len(picture),
                "mode": "chunked",
                "messages": 3,
            },
        )
        await bob.wait_for(3)
        opened = [
            open_envelope(item["envelope"], bob.key, expected_sender=alice_primary).plaintext
            for item in bob.items
        ]
        assembler = ChunkAssembler(opened[0])
        for chunk in reversed(opened[1:]):
            assembler.add(chunk)
        self.assertEqual(assembler.assemble(), picture)
        self.assertEqual(opened[0]["mime"], "image/jpeg")
        # every part carries the key directory head the CLI verified
        head = await bob.chat.log_head()
        for part in opened:
            self.assertEqual(part["head"], {"size": head["size"], "root": head["root"]})


class NatsCliInteropTests(CliTestCase):
    """
    One CLI on native NATS, one on SSE, through the chat-server's bridge
    and a real nats-server started from deploy/nats.conf.
    """

    timeout = 150

    async def setUp(self) -> None:
        self.nats = await start_nats_server(self)

    async def test_native_nats_and_sse_clis_talk(self) -> None:
        await self.start_servers_on_nats(self.nats)
        self.env["KEZ_CHAT_NATS_URL"] = self.nats.url
        alice, bob = await self.registered("alice", "bob")
        nats = ("--nats", self.nats.url)

        # bob reads natively; alice sends once over HTTP, once over NATS
        listening = bob.spawn("listen", *nats, "--json", "--count", "2", "--timeout", "60")
        await alice.ok("send", "bob", "over HTTP", "--json")
        over_nats = (await alice.ok("send", "bob", "over NATS", *nats, "--json")).json
        self.assertEqual(over_nats["to"], "bob@kez.lat")
        result = await listening.done
        self.assertEqual(result.code, 0, str(result))
        got = result.received
        self.assertEqual([m["text"] for m in got], ["over HTTP", "over NATS"])
        for m in got:
            self.assertEqual(
                (m["from"], m["from_primary"], m["verified"]),
                ("alice@kez.lat", alice.account["primary"], True),
            )

        # bob answers over NATS; alice reads over SSE
        await bob.ok("send", "alice", "native answer", *nats)
        [answer] = (await alice.ok("listen", "--json", "--count", "1", "--timeout", "20")).received
        self.assertEqual(
            (answer["from"], answer["text"], answer["verified"]),
            ("bob@kez.lat", "native answer", True),
        )
        # a key the chat-server does not know (say, its database was
        # reset) is refused by the callout: one line, exit 1, no hang
        ghost = self.user("ghost")
        os.makedirs(ghost.home, mode=0o700)
        key = KeyPair.generate()
        with open(os.path.join(ghost.home, "account.json"), "w") as f:
            json.dump({**alice.account, "primary": key.primary, "secret": "keyring"}, f)
        keyring_file = self.env["KEZ_TEST_KEYRING_FILE"]
        with open(keyring_file) as f:
            entries = json.load(f)
        entries[f"kez-chat\0{key.primary}"] = key.seed.hex()
        with open(keyring_file, "w") as f:
            json.dump(entries, f)

        again, quiet, refused, unreachable = await gatherResults(
            [
                ensureDeferred(c)
                for c in (
                    # the SSE side stored the NATS message once
                    alice.ok("listen", "--json", "--timeout", "1.5"),
                    # bob's durable consumer remembers what he saved
                    bob.ok("listen", *nats, "--json", "--timeout", "2"),
                    ghost.run("listen", *nats, "--timeout", "10"),
                    bob.run("send", "alice", "x", "--nats", f"nats://127.0.0.1:{free_port()}"),
                )
            ]
        )
        # (sent copies and receipts may still come in: no message)
        self.assertEqual(again.received, [])
        self.assertEqual(quiet.received, [])
        assert_one_line_error(self, refused, 1, "NATS refused this key")
        assert_one_line_error(self, unreachable, 1, "cannot reach nats://127.0.0.1")
