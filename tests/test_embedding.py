"""
Embedding (SPEC §4): an existing Twisted application mounts the chat
HTTP resource in its own C{Site} under a sub-path and it works there.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from kezchat.identity.keys import KeyPair
from kezchat.server.config import ChatConfig
from kezchat.server.service import makeService
from tests.support import http_client, json_of, register, registration, temp_dir


class EmbeddingTests(TestCase):
    timeout = 30

    async def setUp(self) -> None:
        # The host application's own site, with something of its own beside
        # the chat-server. It listens first so the chat-server can be told
        # its public URL (which includes the mount point).
        self.root = Resource()
        self.root.putChild(b"hello", Data(b"hello from the host", "text/plain"))
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(self.root)
        )
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"

        # No listeners of its own: the host serves it. The service still
        # runs, for the database.
        self.service = makeService(
            ChatConfig(
                listen=(),
                db=os.path.join(temp_dir(self), "embedded.db"),
                public_url=f"{self.base}/chat",
                register_limit=0,
            ),
            reactor,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.assertEqual(await self.service.when_listening(), [])
        await self.service.parts.db.when_ready()
        self.root.putChild(b"chat", self.service.resource())
        self.client = http_client(self)

    async def test_register_lookup_webfinger_under_a_sub_path(self) -> None:
        chat = f"{self.base}/chat"
        key, record = await register(self.client, chat, "embedded")
        self.assertEqual(record["fqhn"], "embedded@kez.lat")
        for path in ("/v1/u/embedded", "/v1/u/EMBEDDED@kez.lat", f"/v1/by-primary/{key.primary}"):
            response = await self.client.get(chat + path)
            self.assertEqual(response.code, 200, path)
            self.assertEqual(await json_of(response), record)

        response = await self.client.get(
            f"{chat}/.well-known/webfinger", params={"resource": "acct:embedded@kez.lat"}
        )
        self.assertEqual(response.code, 200)
        jrd = await json_of(response)
        self.assertEqual(jrd["subject"], "acct:embedded@kez.lat")
        # the self link points into the mount point, and following it works
        (self_link,) = [link["href"] for link in jrd["links"] if link["rel"] == "self"]
        self.assertEqual(self_link, f"{chat}/v1/u/embedded")
        response = await self.client.get(self_link)
        self.assertEqual(await json_of(response), record)

        response = await self.client.get(f"{chat}/v1/healthz")
        self.assertEqual((await json_of(response))["status"], "ok")

    async def test_host_resources_are_untouched(self) -> None:
        response = await self.client.get(f"{self.base}/hello")
        self.assertEqual(await response.content(), b"hello from the host")

    async def test_errors_keep_the_spec_shape_under_the_mount(self) -> None:
        for method, path, status, code in [
            ("GET", "/chat/nowhere", 404, "not_found"),
            ("GET", "/chat/v1/u/a", 400, "invalid_handle"),
            ("DELETE", "/chat/v1/register", 405, "method_not_allowed"),
        ]:
            response = await self.client.request(method, self.base + path)
            self.assertEqual(response.code, status, path)
            self.assertEqual((await json_of(response))["error"]["code"], code, path)

    async def test_registration_cap_holds_in_a_foreign_site(self) -> None:
        """
        A plain C{Site} reads the whole body first; the route's own check
        still refuses a registration over 64 KiB.
        """
        body = registration(KeyPair.generate(), "bulky")
        body["padding"] = "x" * (65 * 1024)
        response = await self.client.post(
            f"{self.base}/chat/v1/register", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.code, 413)
        self.assertEqual((await json_of(response))["error"]["code"], "payload_too_large")
        response = await self.client.get(f"{self.base}/chat/v1/u/bulky")
        self.assertEqual(response.code, 404)
        await response.content()
