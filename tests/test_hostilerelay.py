"""
The hostile relay (L{tests.hostilerelay}) itself, against a real server:
untouched requests pass through, inbox pages and the SSE stream come out
rewritten, and pushed items reach open streams.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from kezchat.e2e import seal_envelope, text_message
from tests.hostilerelay import HostileRelay, Replayer, corrupt_signature, item, relabel
from tests.relaysupport import inbox, open_stream, send
from tests.support import http_client, register, start_server


class HostileRelayTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.server = await start_server(self)
        self.client = http_client(self)
        self.relay = await HostileRelay.start(self, self.server.url)
        self.alice, self.alice_record = await register(self.client, self.server.url, "alice")
        self.bob, _ = await register(self.client, self.server.url, "bob")
        self.mallory, self.mallory_record = await register(
            self.client, self.server.url, "mallory"
        )

    async def _from_mallory(self, text: str) -> None:
        envelope = seal_envelope(self.mallory, self.bob.primary, text_message(text))
        code, _ = await send(
            self.client, self.server.url, self.mallory, "mallory", "bob", envelope
        )
        self.assertEqual(code, 201)

    async def test_passes_through(self) -> None:
        """
        With no rewriters, a page through the relay is the server's page.
        """
        await self._from_mallory("hi")
        code, direct = await inbox(self.client, self.server.url, self.bob, "bob")
        code2, relayed = await inbox(self.client, self.relay.url, self.bob, "bob")
        self.assertEqual((code, code2), (200, 200))
        self.assertEqual(direct, relayed)
        response = await self.client.get(f"{self.relay.url}/v1/u/alice")
        self.assertEqual(response.code, 200)

    async def test_rewrites_pages(self) -> None:
        """
        Rewriters change, add and hide items of C{GET /v1/inbox} pages.
        """
        await self._from_mallory("one")
        await self._from_mallory("two")
        self.relay.rewriters += [
            relabel("alice@kez.lat\u200b", self.alice.primary),
            corrupt_signature(lambda i: i["seq"] == 2),
            Replayer(lambda i: i["seq"] == 2),
            lambda i: [] if i["seq"] == 1 else [i],
        ]
        _, page = await inbox(self.client, self.relay.url, self.bob, "bob")
        _, direct = await inbox(self.client, self.server.url, self.bob, "bob")
        seqs = [i["seq"] for i in page["messages"]]
        self.assertEqual(seqs, [2, 1002])
        self.assertEqual({i["from"] for i in page["messages"]}, {"alice@kez.lat\u200b"})
        self.assertEqual({i["from_primary"] for i in page["messages"]}, {self.alice.primary})
        sig = direct["messages"][1]["envelope"]["sig"]
        self.assertNotEqual(page["messages"][0]["envelope"]["sig"], sig)
        # the replay is the first message again, as the earlier rewriters made it
        replay = page["messages"][1]["envelope"]
        self.assertEqual(replay["ct"], direct["messages"][0]["envelope"]["ct"])

    async def test_rewrites_stream_and_pushes(self) -> None:
        """
        Stream events go through the rewriters; pushed items and raw bytes
        reach every open stream.
        """
        self.relay.rewriters.append(relabel("alice@kez.lat"))
        stream = await open_stream(self, self.relay.url, self.bob, "bob")
        await self.relay.stream_open()
        await self._from_mallory("live")
        await stream.wait_for(1)
        self.assertEqual(stream.items()[0]["from"], "alice@kez.lat")
        self.assertEqual(stream.items()[0]["from_primary"], self.mallory.primary)
        forged = seal_envelope(self.mallory, self.bob.primary, text_message("pushed"))
        self.assertEqual(self.relay.push(item(forged, 77, "carol@kez.lat")), 1)
        self.relay.push_raw(b": just a comment\n\n")
        await stream.wait_for(2)
        self.assertEqual(stream.items()[1]["seq"], 77)
        self.assertEqual(stream.items()[1]["from"], "carol@kez.lat")
        self.assertEqual([i["seq"] for i in self.relay.delivered], [1, 77])
